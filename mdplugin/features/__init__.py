"""Features of structures, built from ONE spherical expansion per batch of frames.

* :mod:`.expansion` — the spherical expansion of molecules and periodic cells as dense numpy arrays
  (fixed species), with position and strain derivatives (:mod:`.radial`: featomic's radial
  spline; :mod:`.kernels`: the compiled per-pair loops).
* :mod:`.cache` — :class:`~.cache.FeatureCache`, the features derived from one structure's
  expansion, formed once for all the models of an MD step.
* :mod:`.lambda_soap` — λ-SOAP (equivariant power spectrum) features by real Clebsch–Gordan
  coupling, and the invariant power spectrum with position gradients; :mod:`.lambda_contract` —
  contractions and norms of λ-SOAP features without forming them.
* :mod:`.soap` — the invariant SOAP power spectrum front end.
* :mod:`.inertia` — principal axes of inertia for rotate–predict–rotate, and their
  featurizer :class:`~.inertia.PrincipalAxes`.
* :mod:`.identity` — the identity featurizer (the structures themselves), for models that
  compute their own descriptors.

A featurizer has ``compute(frames, gradients=False)`` (the features of a batch), ``features(frames,
gradients=False)`` (what the ASE calculator hands to the models of one MD step: ``compute``'s
result, or a per-structure cache around it) and compares equal to another that makes the same
features (the calculator then shares them between models).

Nothing here knows about targets.
"""
