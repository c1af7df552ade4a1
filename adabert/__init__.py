"""adabert: task-adaptive compression of BERT-family teachers by differentiable architecture search and
knowledge distillation (after AdaBERT, Chen et al., IJCAI 2020)."""

__version__ = "0.1.0"
