"""TFX pipelines for the zoo's models (ExampleGen to Pusher). Filled by the TFX work.

Nothing here is imported by `tfrec_onerec`: TFX and Beam stay out of the library's imports.
"""
