"""The stages of reading a photo or a drawing into an MNIST-like digit, a module each, run in order
by images.py (which holds stage 1, decoding and reducing, and puts the stages together): sheet
(2), ink (3), ruling (4), glyphs (5), mnist_steps (6)."""
