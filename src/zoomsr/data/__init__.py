"""Data: image I/O, MATLAB-style resizing, degradations, datasets and the DataModule."""
