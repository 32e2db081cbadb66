"""The i-PI link: mdplugin's models served to an i-PI server, on i-PI's public interfaces.

* :mod:`.mdplugin_pes` — the PES (:class:`MdpluginDriver`, an i-PI custom PES file: unit
  conversion, the calculator call, post-processing into energy, forces, virial and extras);
* :mod:`.client` — :func:`run_client`: i-PI's own driver (``i-pi-py_driver -m custom -P
  PES_FILE -o ...``) in a child process, with a patient connection and a clear end;
* :mod:`.input` — :func:`write_input` / :func:`input_xml`: the i-PI input (``<simulation>``) of a
  run served by mdplugin (NVE, NVT, TRPMD, NPT; dipole, polarizability and their uncertainties as
  extras per bead);
* ``mdplugin ipi`` (:mod:`mdplugin.cli.ipi`) builds the PES options from the command line.

Ways to run the same PES::

    mdplugin ipi --template start.xyz --energy tblite --dipole dipole.npz --unix --address NAME
    i-pi-py_driver -m custom -P PES_FILE -u -a NAME -o template=start.xyz,energy=tblite,dipole=dipole.npz
    <ffdirect><pes>custom</pes><pes_path>PES_FILE</pes_path><parameters>{...}</parameters></ffdirect>

with ``PES_FILE`` = ``python -c "import mdplugin.engines.ipi as m; print(m.PES_FILE)"`` (or the
repository's ``drivers/mdplugin_driver.py``).
"""

from .client import DEFAULT_SOCKETS_PREFIX, PES_FILE, IPIConnectionError, IPIDriverError, driver_command, run_client
from .input import ENSEMBLES, Barostat, Socket, Thermostat, input_xml, write_input
from .mdplugin_pes import EXTRAS_UNITS, MdpluginDriver, extras_json, make_calculator, virial_from_stress

__all__ = [
    "MdpluginDriver",
    "EXTRAS_UNITS",
    "extras_json",
    "make_calculator",
    "virial_from_stress",
    "run_client",
    "driver_command",
    "IPIConnectionError",
    "IPIDriverError",
    "DEFAULT_SOCKETS_PREFIX",
    "PES_FILE",
    "write_input",
    "input_xml",
    "Thermostat",
    "Barostat",
    "Socket",
    "ENSEMBLES",
]
