"""Training loops. Entry points import only torch/numpy (+ mlflow when it is installed and asked for),
so they run on a bare GPU machine."""
