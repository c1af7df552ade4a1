"""The teacher stage: fine-tuning a BERT-family checkpoint (`model`), linear probes on its layers with cached
probe logits (`probes`), and augmented text labelled by it (`augment`)."""
