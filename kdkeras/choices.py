"""Values of run settings that :mod:`kdkeras.config` checks and a layer below it implements.

Kept here, in a leaf that imports nothing, so that a config and a command's
flags read them without importing Keras: the implementing module (named by
each) imports Keras.
"""

#: The choices of ``--plain`` (:mod:`kdkeras.models.plain`); ``none`` trains the named network as it is.
PLAIN_MODES = ("none", "repvgg", "diracnet", "anneal")
#: ``--anneal_fraction`` when not given (:mod:`kdkeras.models.plain`): the skips are gone from the middle of
#: training on.
DEFAULT_ANNEAL_FRACTION = 0.5
