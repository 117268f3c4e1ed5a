"""datalab: an open, self-hostable Data Lab file-exchange server and its campus client."""

__version__ = "0.1.0"
