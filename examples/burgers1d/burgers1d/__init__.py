"""burgers1d: the seed pipeline (1D viscous Burgers, latent operator + diffusion corrector + TTC).

Every entry point is a module run as ``python -m burgers1d.<stage> --config configs/<stage>.yaml``
from the example folder; each one resolves its YAML with :func:`burgers1d.config.load_config`.
The data side (solver, HDF5 I/O, split checks) imports numpy and h5py only; torch is imported
only by the modules that train or evaluate models.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
