"""Pure metric functions, used by training (validation) and by evaluation."""
