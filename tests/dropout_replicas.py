"""Run as a script: GlobalBatchDropout under MirroredStrategy over 2 logical CPUs against Keras's Dropout on one.

Prints one JSON line: whether each replica's rows equal the single-device mask's rows, for an even and a ragged
split of the global batch, and whether Keras's own layer does (it does not: each replica reuses the first rows).
"""

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from kdkeras.layers import GlobalBatchDropout  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = np.random.RandomState(0).randn(10, 4, 4, 3).astype("float32")
    out = {}
    for kind, cls in (("global", GlobalBatchDropout), ("keras", keras.layers.Dropout)):
        for split in ((5, 5), (7, 3)):
            with strategy.scope():
                layer = cls(0.4, seed=11)
                layer.build(x.shape)
            reference = keras.layers.Dropout(0.4, seed=11)
            reference.build(x.shape)
            reference.seed_generator.state.assign(layer.seed_generator.state.value)
            single = keras.ops.convert_to_numpy(reference(x, training=True))
            starts = (0, split[0])

            def value_fn(ctx, starts=starts, split=split):
                i = ctx.replica_id_in_sync_group
                return tf.constant(x[starts[i]:starts[i] + split[i]])

            parts = strategy.experimental_distribute_values_from_function(value_fn)

            @tf.function
            def step(parts, layer=layer):
                return strategy.run(lambda v: layer(v, training=True), args=(parts,))

            result = step(parts)
            got = np.concatenate([keras.ops.convert_to_numpy(v) for v in strategy.experimental_local_results(result)])
            out[f"{kind}_{split[0]}_{split[1]}"] = bool(np.array_equal(got, single))
            out[f"{kind}_dropped"] = float(np.mean(single == 0))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
