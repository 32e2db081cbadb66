"""i-PI custom PES file for mdplugin models (the repository's copy of the path; the PES itself is
``mdplugin/engines/ipi/mdplugin_pes.py``, which i-PI can load directly as well).

Run it with i-PI's own Python driver::

    i-pi-py_driver -m custom -P drivers/mdplugin_driver.py -u -a NAME \
        -o template=start.xyz,energy=tblite,dipole=dipole.npz,polarizability=alpha.npz

or inside i-PI (no socket) with ``<ffdirect><pes>custom</pes><pes_path>drivers/mdplugin_driver.py
</pes_path><parameters>{template: start.xyz, energy: tblite}</parameters></ffdirect>``.

Parameters: ``template`` (structure file with the atom types, in i-PI's atom order), ``energy``
(model file or ``tblite``), ``dipole`` and ``polarizability`` (model files, optional), ``std``,
``calculator`` and ``calculator_arg``: see :class:`mdplugin.engines.ipi.MdpluginDriver`.
Returns energies in Hartree, forces in Hartree/bohr, the virial in Hartree and an extras JSON with
``dipole`` (e·bohr), ``polarizability`` (9, bohr³, row-major) and ``*_std`` uncertainties.
"""

from mdplugin.engines.ipi.mdplugin_pes import MdpluginDriver  # noqa: F401

__DRIVER_NAME__ = "mdplugin"
__DRIVER_CLASS__ = "MdpluginDriver"
