"""Model families. Every deployable model is :class:`mlx_pn.models.transformer.Transformer`."""
