"""Models: plain nn.Modules with explicit constructor arguments."""
