"""A general particle embedding learned by metric learning (issue 20).

Subtomograms of the same structure map close together on the unit sphere whatever their
orientation, noise and neighbours; different structures map apart, including structures
never seen in training.  Used by subdivision (:mod:`tomolens.cluster.subdivide`) and by
pick-by-example (:mod:`tomolens.embed.pick`).
"""
