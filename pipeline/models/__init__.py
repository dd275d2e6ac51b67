"""The models: the CVAEs of the paper, their parts, the judge, and the registry that names them."""
