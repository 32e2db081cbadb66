"""Learning machinery shared by the models, knowing nothing of which model uses it: the sparse GPR
and farthest-point sampling (:mod:`.gpr`) with its regulariser choice (:mod:`.regularizer`), the
models' stateless kernel maths (:mod:`.lambda_kernels` for λ-SOAP, :mod:`.axial_kernel` for RPR),
composition baselines, error metrics and the MPI helpers (:mod:`.parallel`)."""
