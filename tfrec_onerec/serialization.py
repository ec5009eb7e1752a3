"""One decorator that registers a class for Keras serialization under our package name."""
import keras

PACKAGE = "tfrec_onerec"


def register_serializable(cls):
    """Registers `cls` as ``tfrec_onerec>ClassName`` so saved models reload without custom_objects."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
