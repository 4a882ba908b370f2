"""``python -m kdkeras.methods``: rewrites kdkeras/methods/manifest.json from the methods as they are now.

Run it after adding a method or changing a method's settings (docs/methods.md,
"Adding a method"); ``tests/test_methods_manifest.py`` fails until then, and
the commands read the methods themselves, more slowly, until then.
"""

from kdkeras import methods
from kdkeras.methods import _manifest

if __name__ == "__main__":
    _manifest.write(methods._discover())
    print(f"Wrote {_manifest.PATH} ({len(methods.list_methods())} methods)")
