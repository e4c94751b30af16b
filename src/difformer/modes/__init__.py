"""The modes of an invocation: train, evaluate (mode=eval), inspect and energy (mode=inspect)."""
