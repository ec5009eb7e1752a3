"""Data sets: MovieLens-100K, the short-video simulator, sample building, tf.data input.

`get(name)` returns a data set by its CLI name; `names()` lists them.
"""
