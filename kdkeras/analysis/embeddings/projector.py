"""TensorBoard projector files of an embedding.

TensorBoard's projector plugin reads ``projector_config.pbtxt`` from the folder
of each TensorBoard *run* (a folder holding event files) and only accepts
``tensor_path`` / ``metadata_path`` that resolve inside that folder.
:func:`write_projector` therefore writes the config, the vectors, the metadata
and a small event file (the separation score and a description) into one
folder of its own, by default ``<run>/tensorboard/projector/``; TensorBoard
started on ``logs/``, on the run folder or on its ``tensorboard/`` folder
lists it as the run ``.../tensorboard/projector`` in its Projector tab."""

from __future__ import annotations

import glob
import io
import os

import numpy as np

from kdkeras.analysis.embeddings.compute import EMBEDDING_LAYER
from kdkeras.io_utils import atomic_write_text
from kdkeras.training.run_folder import PROJECTOR_TENSORBOARD_DIR

#: Projector folder of a run folder, inside its TensorBoard folder.
PROJECTOR_SUBDIR = PROJECTOR_TENSORBOARD_DIR

PROJECTOR_CONFIG_FILE = "projector_config.pbtxt"  # the name the projector plugin reads

TENSORS_FILE = "tensors.tsv"

METADATA_FILE = "metadata.tsv"

SPRITE_FILE = "sprite.png"

#: Largest side of a sprite image TensorBoard's projector accepts (pixels).
MAX_SPRITE_SIDE = 8192

#: Suffix of the event files written here (older ones are replaced).
EVENTS_SUFFIX = ".projector"


def _clean(text) -> str:
    return " ".join(str(text).split())


def write_projector(directory, embeddings, labels, class_names, *, predictions=None,
                    example_ids=None, images=None, tensor_name: str = EMBEDDING_LAYER, scalars=None,
                    description: str = "", step: int = 0) -> str:
    """Writes TensorBoard projector files for ``embeddings`` into ``directory``.

    Files (each written atomically; the config last)::

        tensors.tsv             one row of tab-separated floats per example
        metadata.tsv            header + one row per example: example, label,
                                class (and predicted, correct)
        sprite.png              with ``images``: their thumbnails, so the
                                projector draws each point as its picture
        projector_config.pbtxt  text ProjectorConfig, paths relative to it
        events.out.tfevents.*.projector   ``scalars`` and ``description``

    The event file makes ``directory`` a TensorBoard run, whose folder the
    projector plugin searches for ``projector_config.pbtxt``; event files of
    an earlier call are removed, so the folder shows the latest embedding.

    Args:
        directory: a folder of its own (created), e.g.
            ``<run>/tensorboard/projector``.
        embeddings: ``(N, D)`` vectors.
        labels: ``(N,)`` integer labels.
        class_names: names indexed by label.
        predictions: optional ``(N,)`` predicted labels (adds the columns
            ``predicted`` and ``correct``).
        example_ids: optional ``(N,)`` indices of the examples in their split
            (default ``0..N-1``).
        images: optional ``(N, H, W, C)`` images of the examples, raw or
            normalised (see :func:`sprite_image`).
        tensor_name: the embedding's name in the projector.
        scalars: optional ``{tag: value}`` logged at ``step``, e.g. the
            separation score.
        description: text logged with the tag ``embeddings/description``.
        step: summary step (e.g. the epoch).

    Returns:
        The path of ``projector_config.pbtxt``.

    Raises:
        ValueError: ``embeddings`` not 2-D, or lengths that disagree.
    """
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if embeddings.ndim != 2 or len(labels) != len(embeddings):
        raise ValueError(f"Expected embeddings (N, D) and labels (N,). Received shapes "
                         f"{embeddings.shape} and {labels.shape}.")
    ids = np.arange(len(labels)) if example_ids is None else np.asarray(example_ids)
    for name, values in (("predictions", predictions), ("example_ids", ids), ("images", images)):
        if values is not None and len(values) != len(labels):
            raise ValueError(f"{name} has {len(values)} entries for {len(labels)} embeddings.")
    os.makedirs(directory, exist_ok=True)

    buffer = io.StringIO()
    np.savetxt(buffer, embeddings, fmt="%.6g", delimiter="\t")
    atomic_write_text(os.path.join(directory, TENSORS_FILE), buffer.getvalue())

    header = ["example", "label", "class"] + (["predicted", "correct"] if predictions is not None else [])
    rows = ["\t".join(header)]
    for i in range(len(labels)):
        row = [str(int(ids[i])), str(int(labels[i])), _clean(class_names[labels[i]])]
        if predictions is not None:
            p = int(predictions[i])
            row += [_clean(class_names[p]), "yes" if p == labels[i] else "no"]
        rows.append("\t".join(row))
    atomic_write_text(os.path.join(directory, METADATA_FILE), "\n".join(rows) + "\n")

    _write_events(directory, scalars or {}, description, step)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = TENSORS_FILE
    embedding.metadata_path = METADATA_FILE
    embedding.tensor_shape.extend(embeddings.shape)
    sprite_path = os.path.join(directory, SPRITE_FILE)
    if images is not None:
        sprite, thumb = sprite_image(images)
        _write_png(sprite_path, sprite)
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend(thumb)
    elif os.path.exists(sprite_path):
        os.remove(sprite_path)  # an earlier call's pictures would label these points wrongly
    path = os.path.join(directory, PROJECTOR_CONFIG_FILE)
    atomic_write_text(path, text_format.MessageToString(config))
    return path


def sprite_image(images) -> tuple[np.ndarray, tuple[int, int]]:
    """The sprite of ``images``: their thumbnails in rows, as TensorBoard's projector reads them.

    Example ``i`` sits at row ``i // n``, column ``i % n`` of an ``n x n``
    grid (``n = ceil(sqrt(N))``), the rest black. Each channel is mapped
    linearly onto 0-255 by its minimum and maximum over all the images, so
    normalised images look like the originals (normalisation is a linear map
    per channel) and raw 0-255 images stay as they are; grey images become
    RGB. Thumbnails are shrunk (by an integer factor) only when the grid
    would exceed :data:`MAX_SPRITE_SIDE` pixels.

    Returns:
        ``(sprite, (height, width))``: a ``uint8`` RGB array and the size of
        one thumbnail.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise ValueError(f"Expected images (N, H, W, 1 or 3). Received shape {images.shape}.")
    low = images.min(axis=(0, 1, 2), keepdims=True)
    high = images.max(axis=(0, 1, 2), keepdims=True)
    if float(low.min()) >= 0 and float(high.max()) <= 255 and float(high.max()) > 1:
        low, high = np.zeros_like(low), np.full_like(high, 255.0)  # raw pixels: keep them
    scaled = np.rint(255.0 * (images - low) / np.maximum(high - low, 1e-12)).astype(np.uint8)
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    n = int(np.ceil(np.sqrt(len(scaled))))
    step = int(np.ceil(n * max(scaled.shape[1:3]) / MAX_SPRITE_SIDE)) or 1
    thumbs = scaled[:, ::step, ::step]
    h, w = thumbs.shape[1:3]
    sprite = np.zeros((n * h, n * w, 3), np.uint8)
    for i, thumb in enumerate(thumbs):
        r, c = divmod(i, n)
        sprite[r * h:(r + 1) * h, c * w:(c + 1) * w] = thumb
    return sprite, (h, w)


def _write_png(path, image) -> None:
    """Writes a ``uint8`` image as PNG, atomically."""
    import tensorflow as tf

    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())
    os.replace(tmp, path)


def _write_events(directory, scalars, description, step):
    import tensorflow as tf

    for old in glob.glob(os.path.join(directory, f"events.out.tfevents.*{EVENTS_SUFFIX}")):
        os.remove(old)
    writer = tf.summary.create_file_writer(directory, filename_suffix=EVENTS_SUFFIX)
    with writer.as_default():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, float(value), step=int(step))
        tf.summary.text("embeddings/description", description or "penultimate-layer embeddings",
                        step=int(step))
    writer.close()


def read_projector_config(directory):
    """The ``ProjectorConfig`` message of ``directory/projector_config.pbtxt``."""
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    with open(os.path.join(directory, PROJECTOR_CONFIG_FILE)) as f:
        return text_format.Parse(f.read(), projector.ProjectorConfig())
