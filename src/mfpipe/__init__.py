"""mfpipe: map where deep (dropout) networks can be trained."""

__version__ = "0.1.0"
