"""Milliseconds per training step of each distillation method (kdkeras.methods), interleaved.

WRN-16x1 NR-g2 student distilled from a WRN-16x1 R-g2 teacher, batch 128, synthetic inputs, the paper's
optimizer. Each round builds every method's Distiller afresh, warms it up for 3 steps, then times 15 steps.

    python benchmarks/method_cost.py --rounds=3

Prints one JSON line: {method: [ms per step of each round]}.
"""

import argparse
import json
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from kdkeras import build_model
    from kdkeras.distiller import method_distiller
    from kdkeras.optimizers import PyTorchSGD

    x = tf.random.normal((128, 32, 32, 3))
    y = tf.random.uniform((128,), 0, 100, dtype=tf.int64)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    out = {}
    for _ in range(args.rounds):
        for method in ("kd", "dkd", "fitnets", "at"):
            keras.utils.set_random_seed(0)
            student = build_model("wrn16x1_NR_g2", num_classes=100)
            teacher = build_model("wrn16x1_R_g2", num_classes=100)
            distiller = method_distiller(student, teacher, method)
            distiller.compile(optimizer=PyTorchSGD(learning_rate=0.1, momentum=0.9, weight_decay=4e-4))
            distiller.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # trace, warm up
            start = time.perf_counter()
            distiller.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0, shuffle=False)
            out.setdefault(method, []).append(round(1000 * (time.perf_counter() - start) / args.steps, 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
