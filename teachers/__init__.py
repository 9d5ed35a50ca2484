"""Teacher processes: the mlx_lm.server launcher and its supervisor, the bundled model, the simulated teacher."""
