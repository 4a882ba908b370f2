"""Times one grouped 3x3 convolution (forward and backward) in each of GroupedConv2D's forms.

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/grouped_conv_forms.py                 # the table of docs/benchmarks.md
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/grouped_conv_forms.py --shapes=all    # every zoo shape (about 30 min)
    python benchmarks/grouped_conv_forms.py --forms=tf,split,dense,depthwise        # oneDNN on: its kernel too

Each row is a layer shape of the zoo (batch 128, 'same', stride 1) and a
grouping; each form's time is the best of three windows, in ms per forward
and backward pass (input and kernel gradients). The last column is what
``kdkeras.layers.portable_implementation`` picks. The depthwise form is
skipped (``-``) above 16 channels per group, where it takes seconds.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kdkeras  # noqa: E402,F401  (before TensorFlow, as in a user's script)

#: (H, C, grouping) rows of the table in docs/benchmarks.md.
DOC_ROWS = [
    (32, 32, "g2"), (32, 32, "g16"), (32, 32, "G4"), (16, 64, "g2"), (16, 64, "g16"), (16, 64, "G4"),
    (8, 128, "g2"), (8, 128, "g16"), (8, 128, "G4"), (32, 160, "g2"), (32, 160, "G4"), (17, 144, "G4"),
    (9, 192, "g16"), (4, 512, "G2"),
]
#: (H, C) of every grouped layer width of the zoo: WRN-16x1/22x2/22x10, MobileNetV2, ResNet-18.
ZOO_LAYERS = [(32, 16), (16, 32), (32, 32), (16, 64), (8, 64), (8, 128), (32, 160), (16, 320), (8, 640),
              (34, 96), (17, 144), (9, 192), (5, 576), (4, 512)]
GROUPINGS = ["g2", "g4", "g8", "g16", "G2", "G4", "G8", "G16"]


def groups_of(channels, grouping):
    n = int(grouping[1:])
    return n if grouping[0] == "g" else channels // n


def time_form(form, height, channels, groups, batch):
    import tensorflow as tf

    from kdkeras.layers import GroupedConv2D

    x = tf.random.normal((batch, height, height, channels))
    layer = GroupedConv2D(channels, 3, padding="same", groups=groups, use_bias=False, implementation=form)
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x, layer.kernel])

    step(x)[1].numpy()
    start = time.perf_counter()
    step(x)[1].numpy()
    repeats = max(2, min(5, int(0.5 / max(time.perf_counter() - start, 1e-3))))
    windows = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            step(x)[1].numpy()
        windows.append((time.perf_counter() - start) / repeats)
    return 1000 * min(windows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=["doc", "all"], default="doc")
    parser.add_argument("--forms", default="split,depthwise,dense")
    parser.add_argument("--batch", type=int, default=128)
    opts = parser.parse_args()
    from kdkeras import host
    from kdkeras.layers import CONV_IMPLEMENTATIONS, portable_implementation

    forms = opts.forms.split(",")
    bad = [f for f in forms if f not in CONV_IMPLEMENTATIONS or f == "auto"]
    if bad:
        parser.error(f"unknown form {', '.join(bad)}. Valid choices: {', '.join(CONV_IMPLEMENTATIONS[1:])}.")
    if opts.shapes == "doc":
        rows = DOC_ROWS
    else:
        rows = [(h, c, g) for h, c in ZOO_LAYERS for g in GROUPINGS if c % int(g[1:]) == 0
                and 1 < groups_of(c, g) < c]
    cpu = host.cpu_info()
    print(f"CPU: {cpu['model']}; oneDNN {host.onednn_reason()}; batch {opts.batch}; ms per forward+backward.\n")
    print(f"| layer (H x W x C) | grouping | C/groups | {' | '.join(forms)} | rule picks |")
    print(f"| --- | --- | ---: | {' | '.join('---:' for _ in forms)} | --- |")
    for height, channels, grouping in rows:
        groups = groups_of(channels, grouping)
        times = {}
        for form in forms:
            if form == "depthwise" and channels // groups > 16:
                continue
            times[form] = time_form(form, height, channels, groups, opts.batch)
        best = min(times, key=times.get)
        cells = [("-" if f not in times else (f"**{times[f]:.1f}**" if f == best else f"{times[f]:.1f}"))
                 for f in forms]
        print(f"| {height}x{height}x{channels} | {grouping} | {channels // groups} | {' | '.join(cells)} | "
              f"{portable_implementation(channels, groups, channels)} |", flush=True)


if __name__ == "__main__":
    main()
