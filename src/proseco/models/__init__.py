"""Backbones and the model protocol."""

from proseco.models.protocol import call_model, is_time_conditioned, model_vocab_size

__all__ = ["call_model", "is_time_conditioned", "model_vocab_size"]
