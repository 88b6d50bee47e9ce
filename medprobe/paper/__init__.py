"""What the paper's authors computed, as data and small functions (Han et al., "Multimodal
Large Language Models are Generalist Medical Image Interpreters"; public code
``peterhan91/Multimodal-Probes``)."""
