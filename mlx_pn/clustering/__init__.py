"""Clustering of training windows: embed (MiniLM / static), k-means, the cluster stage (labels and histograms on disk), importance resampling."""
