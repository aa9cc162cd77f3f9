"""A general particle embedding learned by metric learning (issue 20).

The network is trained so that subtomograms of the same structure map close together on the
unit sphere whatever their orientation, noise and neighbours, and different structures map
apart.  No weights are shipped yet: the best model trained so far does not separate unseen
structures as well as the classifier's features (``benchmarks/results/embed.json``,
docs/embedding.md).  Used by subdivision (``features="embedding"``, :mod:`tomolens.cluster.subdivide`)
and by pick-by-example (:mod:`tomolens.embed.pick`).
"""
