#!/usr/bin/env python3
"""Drive an sfnode API server through the real PyPI client, shakenfist-client 0.8.3.

One subcommand per step of an acceptance test. Each one makes exactly the calls that
`shakenfist_client.apiclient.Client` (and, where it says so, the `sf-client` command line) makes,
prints ONE JSON document on stdout and exits:

  0  success: the document is what the client returned (null where it returned None)
  1  the client raised, or reported a failure: the document is {"error": {...}} with the
     exception's type, message, and for API errors the method, url, status and response text;
     a one-line message goes to stderr as well
  2  bad command line (argparse's message on stderr, nothing on stdout)
  3  --timeout passed: {"error": {"type": "Timeout", ...}}

Everything the client and its helpers print themselves (progress bars, "Creating artifact", ...)
goes to stderr, so stdout holds only the document.

The client finds the server as it always does: SHAKENFIST_API_URL (with SHAKENFIST_NAMESPACE and
SHAKENFIST_KEY), else ~/.shakenfist, else /etc/sf/shakenfist.json. When SHAKENFIST_API_URL is
unset and SFNODE_CLIENT_CONFIG names a config file (the one `sfnode serve` writes), its apiurl,
namespace and key are put into those three variables first. The client is the library's
default `Client()` (async strategy "block": it waits up to an hour for 406s and for instances and
networks to settle); --async-strategy picks another, and --timeout bounds the whole command.

Only loopback is reachable from this process (loopback_guard): a server URL that is not on
this machine fails with a NonLoopbackRefused error.

Run it with the interpreter of scripts/client-venv:
  "$(scripts/client-venv)/bin/python" Tests/Acceptance/client_api.py capabilities
"""

import argparse
import base64
import hashlib
import json
import os
import signal
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_guard  # noqa: E402

loopback_guard.install()

import requests  # noqa: E402
from shakenfist_client import apiclient  # noqa: E402
from shakenfist_client import util  # noqa: E402


# Every capability string the 0.8.3 client (apiclient, util and the command line) tests for,
# plus every string a v0.8 or newer upstream server advertises on its root page.
KNOWN_CAPABILITIES = sorted({
    # Tested by the 0.8.3 client.
    'agentoperations-crud', 'artifact-metadata', 'artifact-upload-types', 'blob-data-limit',
    'blob-events', 'blob-metadata', 'blob-search-by-hash', 'blob-single-checksum',
    'cluster-cacert', 'cluster-operation-chain', 'cluster-operations-by-target',
    'cluster-resources', 'events-by-type', 'extra-dns-entries', 'get-cluster-operations',
    'get-instance-namespace', 'get-network-namespace', 'hot-plug-interface',
    'instance-agentoperations', 'instance-agentoperations-all', 'instance-execute',
    'instance-get', 'instance-put-blob', 'instance-screenshot', 'interface-metadata',
    'list-addresses', 'network-delete-async', 'node-get', 'node-metadata',
    'node-process-metrics', 'provide-dns', 'route-addresses', 'vdi-console-helper',
    'vdi-console-proxy',
    # Advertised by the v0.8 server.
    'blob-hash-sha1', 'blob-hash-sha256', 'blob-hash-xxh128', 'pure-affinity',
    'spice-vdi-console',
    # Advertised by newer servers only.
    'agentoperations-put-with-mode', 'artifact-clusteroperations', 'blob-checksums',
    'federated-exchange', 'generated-key-secrets', 'include-queued-agent-operations',
    'instance-clusteroperations', 'mapping-rules', 'network-clusteroperations',
    'scope-enforcement', 'trusted-issuers', 'vdi-token-pubkey',
})


class CommandFailed(Exception):
    """A failure the client reports by printing or returning, not by raising."""


class Timeout(Exception):
    pass


class _TeeToStderr:
    """Stands in for sys.stdout while the client runs: writes go to stderr, and the last line
    is kept so a helper that prints its reason and calls sys.exit can be reported."""

    def __init__(self):
        self.last_line = ''

    def write(self, text):
        sys.stderr.write(text)
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self.last_line = lines[-1]
        return len(text)

    def flush(self):
        sys.stderr.flush()

    def isatty(self):
        return False


class _HTTPLog:
    """Records every HTTP request this process sends (requests.Session.send sees each one,
    redirects and the client's authentication included)."""

    def __init__(self):
        self.entries = []
        original_send = requests.Session.send
        log = self

        def send(session, request, **kwargs):
            entry = {'method': request.method, 'url': request.url, 'status': None}
            log.entries.append(entry)
            response = original_send(session, request, **kwargs)
            entry['status'] = response.status_code
            return response

        requests.Session.send = send


HTTP_LOG = _HTTPLog()


def _parse_spec(spec):
    # As the command line's _parse_spec: "A@B" is (A, B), "A" is (A, None).
    if '@' not in spec:
        return spec, None
    parts = spec.split('@')
    if len(parts) != 2:
        raise CommandFailed('specification %r has more than one @' % spec)
    return parts[0], parts[1]


def _convert_metadata(key, value):
    # As the command line: the reserved keys tags and affinity hold JSON.
    if key in ['tags', 'affinity']:
        try:
            return json.loads(value)
        except json.decoder.JSONDecodeError as e:
            raise CommandFailed('Reserved metadata keys (tags, affinity) must contain '
                                'valid JSON: %s' % e)
    return value


def _client(args):
    # sfnode serve writes the client config at $SFNODE_CLIENT_CONFIG, which the client itself
    # never reads (it knows only ~/.shakenfist and /etc/sf/shakenfist.json). When that variable
    # is set and SHAKENFIST_API_URL is not, hand the file's values to the client through the
    # environment, as a user who sourced /etc/sf/sfrc would.
    path = os.environ.get('SFNODE_CLIENT_CONFIG')
    if path and not os.environ.get('SHAKENFIST_API_URL'):
        with open(path) as f:
            conf = json.load(f)
        os.environ['SHAKENFIST_API_URL'] = conf['apiurl']
        os.environ['SHAKENFIST_NAMESPACE'] = conf['namespace']
        os.environ['SHAKENFIST_KEY'] = conf['key']
    if args.async_strategy == apiclient.ASYNC_BLOCK:
        return apiclient.Client()
    return apiclient.Client(async_strategy=args.async_strategy)


# Subcommands. Each takes the parsed arguments and a client and returns what to print.

def cmd_capabilities(args, client):
    return [c for c in KNOWN_CAPABILITIES if client.check_capability(c)]


def cmd_create_network(args, client):
    if args.dns:
        return client.allocate_network(args.netblock, True, True, args.name, provide_dns=True)
    return client.allocate_network(args.netblock, True, True, args.name)


def cmd_ping(args, client):
    return client.ping(args.ref, args.address)


def cmd_set_dns_entry(args, client):
    return client.update_network_dns_entry(args.ref, args.name, args.value)


def cmd_delete_dns_entry(args, client):
    return client.delete_network_dns_entry(args.ref, args.name)


def cmd_show_network(args, client):
    return client.get_network(args.ref)


def cmd_delete_network(args, client):
    return client.delete_network(args.ref)


def cmd_create_instance(args, client):
    # Built exactly as `sf-client instance create` builds them (commandline/instance.py).
    sshkey_content = args.sshkey
    userdata_content = None
    if args.userdata_file:
        with open(args.userdata_file) as f:
            userdata_content = f.read()
        userdata_content = str(base64.b64encode(userdata_content.encode('utf-8')), 'utf-8')

    diskdefs = []
    for d in args.disk:
        size, base = _parse_spec(d)
        try:
            size_int = int(size)
        except Exception:
            raise CommandFailed('Disk size is not an integer: %r' % d)
        diskdefs.append({'size': size_int, 'base': base, 'bus': None, 'type': 'disk'})

    # --float makes every --network an `-f` (floated) interface, otherwise each is an `-n`.
    netdefs = []
    for n in args.network or []:
        network_uuid, address = _parse_spec(n)
        netdef = {'network_uuid': network_uuid, 'macaddress': None, 'model': 'virtio'}
        if args.float:
            netdef['float'] = True
        if address:
            netdef['address'] = address
        netdefs.append(netdef)

    metadata_def = {}
    for m in args.metadata or []:
        try:
            key, val = m.split('=')
        except ValueError:
            raise CommandFailed('Unable to parse metadata, correct format is "key=value"')
        metadata_def[key] = _convert_metadata(key, val)

    if args.no_side_channels:
        if args.side_channel:
            raise CommandFailed('You cannot specify both --side-channel and --no-side-channels')
        side_channels = []
    elif args.side_channel:
        side_channels = list(args.side_channel)
    else:
        side_channels = None

    return client.create_instance(
        args.name, args.cpus, args.memory, netdefs, diskdefs, sshkey_content,
        userdata_content,
        force_placement=args.placement,
        namespace=args.namespace,
        video={'model': 'cirrus', 'memory': 16384},
        uefi=False,
        configdrive=args.configdrive,
        secure_boot=False,
        nvram_template=None,
        metadata=metadata_def,
        side_channels=side_channels)


def cmd_show_instance(args, client):
    return client.get_instance(args.ref)


def cmd_instance_events(args, client):
    # The command line passes --limit through as a string; so does this.
    return client.get_instance_events(args.ref, event_type=args.type, limit=args.limit)


def cmd_set_metadata(args, client):
    return client.set_instance_metadata_item(
        args.ref, args.key, _convert_metadata(args.key, args.value))


def cmd_get_metadata(args, client):
    return client.get_instance_metadata(args.ref)


def cmd_reboot(args, client):
    return client.reboot_instance(args.ref, hard=args.hard)


def cmd_power_off(args, client):
    return client.power_off_instance(args.ref)


def cmd_power_on(args, client):
    return client.power_on_instance(args.ref)


def cmd_float(args, client):
    return client.float_interface(args.iface_uuid)


def cmd_defloat(args, client):
    return client.defloat_interface(args.iface_uuid)


def cmd_show_interface(args, client):
    return client.get_interface(args.iface_uuid)


def cmd_delete_instance(args, client):
    result = client.delete_instance(args.ref)
    if not result:
        # The client printed "ERROR: No instance UUID returned by API" and returned {}.
        raise CommandFailed('the DELETE response had no instance uuid, so the client '
                            'returned {} without waiting')
    return result


def cmd_upload_artifact(args, client):
    # Exactly `sf-client artifact upload NAME SOURCE` (commandline/artifact.py) with its
    # defaults: checksum on, no source_url, not shared, no namespace.
    if args.no_checksum:
        blob = None
    elif not client.check_capability('blob-search-by-hash'):
        blob = None
    else:
        blob = util.checksum_with_progress(client, args.file)

    if not blob:
        print('Uploading new blob')
        artifact = util.upload_artifact_with_progress(
            client, args.name, args.file, None, namespace=None, shared=False)
    else:
        print('Recycling existing blob')
        artifact = client.blob_artifact(
            args.name, blob['uuid'], source_url=None, shared=False, namespace=None)
    print('Created artifact %s' % artifact['uuid'])
    return artifact


def cmd_show_artifact(args, client):
    return client.get_artifact(args.ref)


def cmd_show_blob(args, client):
    return client.get_blob(args.blob_uuid)


def cmd_blob_data(args, client):
    first = len(HTTP_LOG.entries)
    digest = hashlib.sha512()
    total = 0
    with open(args.outfile, 'wb') as f:
        for chunk in client.get_blob_data(args.blob_uuid):
            f.write(chunk)
            digest.update(chunk)
            total += len(chunk)

    data_path = '/blobs/%s/data' % args.blob_uuid
    data_requests = []
    for entry in HTTP_LOG.entries[first:]:
        url = urllib.parse.urlsplit(entry['url'])
        if url.path.endswith(data_path):
            data_requests.append({'query': url.query, 'status': entry['status']})
    return {
        'bytes': total,
        'sha512': digest.hexdigest(),
        'requests': len(data_requests),
        'data_requests': data_requests,
        'blob_data_limit': client.check_capability('blob-data-limit'),
    }


def cmd_blob_by_sha512(args, client):
    return client.get_blob_by_sha512(args.hex)


def cmd_console(args, client):
    data = client.get_console_data(args.ref, length=args.length, decode=None)
    return {'bytes': len(data), 'text': data.decode('utf-8', errors='replace')}


def cmd_call(args, client):
    """Any method of the client by name, each argument JSON where it parses (else a string)."""
    def value(text):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return getattr(client, args.method)(*[value(a) for a in args.arguments])


def _parser():
    p = argparse.ArgumentParser(
        prog='client_api.py',
        description='Drive an sfnode API server with the real shakenfist-client 0.8.3. '
                    'Each subcommand prints one JSON document on stdout.')
    p.add_argument('--timeout', type=float, default=None, metavar='SECONDS',
                   help='give up (exit 3) when the whole command takes longer than this')
    p.add_argument('--async-strategy', choices=['continue', 'pause', 'block'],
                   default='block',
                   help="the client's async strategy (default block, the library's default; "
                        'sf-client defaults to pause)')
    sub = p.add_subparsers(dest='command', metavar='SUBCOMMAND', required=True)

    def add(name, func, help_text):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.set_defaults(func=func)
        return s

    add('capabilities', cmd_capabilities,
        'the capability strings the client sees on the root page (check_capability over '
        'every known string)')

    s = add('create-network', cmd_create_network,
            'allocate_network(NETBLOCK, True, True, NAME); waits while initial/creating')
    s.add_argument('name')
    s.add_argument('netblock')
    s.add_argument('--dns', action='store_true', help='provide_dns=True')

    s = add('ping', cmd_ping, 'ping(NETWORK_REF, ADDRESS): {"stdout": [...], "stderr": [...]}')
    s.add_argument('ref')
    s.add_argument('address')

    s = add('set-dns-entry', cmd_set_dns_entry, 'update_network_dns_entry(NETWORK_REF, NAME, VALUE)')
    s.add_argument('ref')
    s.add_argument('name')
    s.add_argument('value')

    s = add('delete-dns-entry', cmd_delete_dns_entry, 'delete_network_dns_entry(NETWORK_REF, NAME)')
    s.add_argument('ref')
    s.add_argument('name')

    s = add('show-network', cmd_show_network, 'get_network(REF)')
    s.add_argument('ref')

    s = add('delete-network', cmd_delete_network, 'delete_network(REF)')
    s.add_argument('ref')

    s = add('create-instance', cmd_create_instance,
            'create_instance(...) with the disk and network specs sf-client instance create '
            'builds; waits while initial/creating')
    s.add_argument('name')
    s.add_argument('cpus', type=int)
    s.add_argument('memory', type=int, help='MiB')
    s.add_argument('--disk', action='append', required=True, metavar='SIZE[@BASE]',
                   help='as sf-client -d: {"size": SIZE, "base": BASE, "bus": null, '
                        '"type": "disk"}; repeatable, in order')
    s.add_argument('--network', action='append', metavar='NETREF[@ADDRESS]',
                   help='as sf-client -n: {"network_uuid": NETREF, "macaddress": null, '
                        '"model": "virtio"[, "address": ADDRESS]}; repeatable, in order')
    s.add_argument('--float', action='store_true',
                   help='every --network is floated, as sf-client -f ("float": true)')
    s.add_argument('--sshkey', metavar='KEY', help='ssh public key text (sf-client -I)')
    s.add_argument('--userdata-file', metavar='FILE',
                   help='sent base64-encoded (sf-client -u)')
    s.add_argument('--configdrive', choices=['openstack-disk', 'none'],
                   default='openstack-disk', help="default openstack-disk, as sf-client's")
    s.add_argument('--metadata', action='append', metavar='KEY=VALUE',
                   help='as sf-client -m (tags and affinity are JSON)')
    s.add_argument('--side-channel', action='append', metavar='NAME',
                   help='as sf-client -s; without it side_channels is null (server default)')
    s.add_argument('--no-side-channels', action='store_true',
                   help='side_channels [] (sf-client --no-side-channels)')
    s.add_argument('--placement', metavar='NODE', help='force_placement (sf-client -p)')
    s.add_argument('--namespace', help='create in this namespace (admin)')

    s = add('call', cmd_call,
            'any client method: call METHOD [ARG ...], each ARG JSON where it parses, else a string')
    s.add_argument('method')
    s.add_argument('arguments', nargs='*')

    s = add('show-instance', cmd_show_instance, 'get_instance(REF)')
    s.add_argument('ref')

    s = add('instance-events', cmd_instance_events,
            'get_instance_events(REF, event_type=T, limit=N); N is sent as a string, as '
            'sf-client sends it')
    s.add_argument('ref')
    s.add_argument('--type')
    s.add_argument('--limit')

    s = add('set-metadata', cmd_set_metadata,
            'set_instance_metadata_item(REF, KEY, VALUE); tags/affinity values are JSON, '
            'as in sf-client')
    s.add_argument('ref')
    s.add_argument('key')
    s.add_argument('value')

    s = add('get-metadata', cmd_get_metadata, 'get_instance_metadata(REF)')
    s.add_argument('ref')

    s = add('reboot', cmd_reboot, 'reboot_instance(REF, hard=--hard)')
    s.add_argument('ref')
    s.add_argument('--hard', action='store_true')

    s = add('power-off', cmd_power_off, 'power_off_instance(REF)')
    s.add_argument('ref')

    s = add('power-on', cmd_power_on, 'power_on_instance(REF)')
    s.add_argument('ref')

    s = add('float', cmd_float, 'float_interface(IFACE_UUID)')
    s.add_argument('iface_uuid')

    s = add('defloat', cmd_defloat, 'defloat_interface(IFACE_UUID)')
    s.add_argument('iface_uuid')

    s = add('show-interface', cmd_show_interface, 'get_interface(IFACE_UUID)')
    s.add_argument('iface_uuid')

    s = add('delete-instance', cmd_delete_instance,
            'delete_instance(REF); the client polls until state is deleted (or its deadline)')
    s.add_argument('ref')

    s = add('upload-artifact', cmd_upload_artifact,
            'as sf-client artifact upload NAME FILE: sha512 search first when the server '
            'advertises blob-search-by-hash, else util.upload_artifact_with_progress')
    s.add_argument('name')
    s.add_argument('file')
    s.add_argument('--no-checksum', action='store_true',
                   help='skip the blob search (sf-client --no-checksum)')

    s = add('show-artifact', cmd_show_artifact, 'get_artifact(REF)')
    s.add_argument('ref')

    s = add('show-blob', cmd_show_blob, 'get_blob(BLOB_UUID)')
    s.add_argument('blob_uuid')

    s = add('blob-data', cmd_blob_data,
            'iterate get_blob_data(BLOB_UUID) to its end into OUTFILE; prints bytes, sha512 '
            'and the number of data requests')
    s.add_argument('blob_uuid')
    s.add_argument('outfile')

    s = add('blob-by-sha512', cmd_blob_by_sha512, 'get_blob_by_sha512(HEX): the blob or null')
    s.add_argument('hex')

    s = add('console', cmd_console,
            'get_console_data(REF, length=N): {"bytes": n, "text": utf-8 with replacement}')
    s.add_argument('ref')
    s.add_argument('--length', type=int, default=None,
                   help='omitted: no body, the server default (10240)')
    return p


def _error_document(e):
    doc = {'type': type(e).__name__, 'message': str(e)}
    if isinstance(e, apiclient.APIException):
        text = e.text
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict) and 'error' in parsed:
                doc['message'] = parsed['error']
            else:
                doc['message'] = e.message
        except Exception:
            doc['message'] = e.message
        doc.update({'method': e.method, 'url': e.url, 'status': e.status_code,
                    'text': text})
    return doc


def main(argv=None):
    args = _parser().parse_args(argv)
    real_stdout = sys.stdout
    tee = _TeeToStderr()
    sys.stdout = tee

    def on_alarm(signum, frame):
        raise Timeout('gave up after %g s (--timeout)' % args.timeout)

    if args.timeout:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, args.timeout)

    start = time.time()
    code = 0
    try:
        client = _client(args)
        result = args.func(args, client)
    except Timeout as e:
        code = 3
        result = {'error': {'type': 'Timeout', 'message': str(e)}}
    except SystemExit as e:
        # A client helper gave up with sys.exit (e.g. "Remote side has N, we have sent M!").
        code = 1
        result = {'error': {'type': 'SystemExit', 'message': tee.last_line or str(e.code)}}
    except Exception as e:
        code = 1
        result = {'error': _error_document(e)}
    finally:
        if args.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = real_stdout

    if code:
        err = result['error']
        where = ''
        if 'status' in err:
            where = ' (%s %s -> %s)' % (err['method'], err['url'], err['status'])
        sys.stderr.write('client_api.py %s: %s: %s%s after %.1f s\n'
                         % (args.command, err['type'], err['message'], where,
                            time.time() - start))
    real_stdout.write(json.dumps(result, sort_keys=True) + '\n')
    real_stdout.flush()
    return code


if __name__ == '__main__':
    sys.exit(main())
