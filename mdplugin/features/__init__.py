"""Features built from ONE featomic spherical expansion per batch of frames.

* :mod:`.expansion` — featomic ``SphericalExpansion`` as dense numpy arrays (fixed species).
* :mod:`.lambda_soap` — λ-SOAP (equivariant power spectrum) features by real Clebsch–Gordan
  coupling, and the invariant power spectrum with position gradients.
* :mod:`.soap` — the invariant SOAP power spectrum front end.
* :mod:`.inertia` — inertia (principal-axis) frames for rotate–predict–rotate, and their
  featurizer :class:`~.inertia.InertiaFrames`.
* :mod:`.identity` — the identity featurizer (the structures themselves), for models that
  compute their own descriptors.

A featurizer has ``compute(frames, gradients=False)`` and compares equal to another that makes
the same features (the ASE calculator shares them between models).

Nothing here knows about targets.
"""
