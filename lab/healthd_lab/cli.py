"""healthd-lab command line (lab/healthd-lab calls main())."""
import argparse
import sys

from . import __doc__ as LAB_DOC  # the package docstring is the --help description
from .constants import FAULTS, SOLO_FAULTS
from .lab import Lab, env_exports
from .util import LabError


def main(argv=None):
    ap = argparse.ArgumentParser(prog='healthd-lab', description=LAB_DOC,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('up', help='bring the lab up (idempotent)')
    sub.add_parser('down', help='stop everything and drop lab DBs/vhost/users')
    sub.add_parser('status', help='catalog, services, hypervisors, mappings')
    sub.add_parser('env', help='print shell exports')
    for c in ('inject', 'revert'):
        sp = sub.add_parser(c, help=f'{c} a fault')
        sp.add_argument('fault', choices=(*FAULTS, *SOLO_FAULTS, 'all'))
    args = ap.parse_args(argv)
    lab = Lab()
    try:
        if args.cmd == 'up':
            lab.up()
        elif args.cmd == 'down':
            lab.down()
        elif args.cmd == 'status':
            ok, report = lab.status()
            print(report)
            return 0 if ok else 1
        elif args.cmd == 'env':
            for k, v in env_exports(lab):
                print(f'export {k}={v}')
        elif args.cmd == 'inject':
            lab.inject(args.fault)
        elif args.cmd == 'revert':
            lab.revert(args.fault)
    except LabError as exc:
        print(f'healthd-lab: error: {exc}', file=sys.stderr)
        return 1
    return 0

