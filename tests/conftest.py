"""Shared test set-up. Importing tfrec_onerec first fixes the TensorFlow environment."""
import tfrec_onerec  # noqa: F401  (sets the TF environment before TensorFlow is imported)
