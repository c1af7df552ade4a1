"""Classic distillation methods as baselines (Hinton KD, MSE logits, probe KD, intermediate-layer matching,
born-again, mutual learning) trained into any student."""
