"""Seeing what an item is: the one preprocessing, the interpreter, the classifier."""
