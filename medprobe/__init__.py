"""medprobe: linear probes on the hidden states of (multimodal) models for medical images."""

__version__ = "0.1.0"
