#!/usr/bin/env bash
# Make a private CA and the certificates signed by it, with openssl (EC P-256).
#
#   make-certs.sh ca DIR                     DIR/ca.key, DIR/ca.crt (the CA; keep ca.key offline)
#   make-certs.sh broker DIR NAME [IP...]    DIR/broker.key, DIR/broker.crt for host NAME (and IPs)
#   make-certs.sh client DIR NAME            DIR/NAME.key, DIR/NAME.crt (a bin's client certificate)
#
# broker and client sign with DIR/ca.key. DAYS (default 825) sets the validity.
# Used by docs/mqtt-security.md and by tests/test_mqtt_security.py.
set -euo pipefail
usage() { sed -n '2,9p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
kind=$1 dir=$2
shift 2
days=${DAYS:-825}
mkdir -p "$dir"
umask 077
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
sign() {  # sign NAME EXTFILE: DIR/NAME.csr -> DIR/NAME.crt
    openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days "$days" -sha256 -extfile "$2" -out "$dir/$1.crt" 2>/dev/null
    rm -f "$dir/$1.csr" "$2"
    chmod 0644 "$dir/$1.crt"
}
case $kind in
ca)
    new_key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -days "$days" -sha256 -subj "/CN=bin-agent MQTT CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.crt"
    chmod 0644 "$dir/ca.crt"
    ;;
broker)
    [ $# -ge 1 ] || usage
    name=$1
    shift
    san="DNS:$name"
    for ip in "$@"; do san="$san,IP:$ip"; done
    new_key "$dir/broker.key"
    openssl req -new -key "$dir/broker.key" -subj "/CN=$name" -out "$dir/broker.csr"
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$san" >"$ext"
    sign broker "$ext"
    ;;
client)
    [ $# -eq 1 ] || usage
    name=$1
    new_key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr"
    ext=$(mktemp)
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$ext"
    sign "$name" "$ext"
    ;;
*) usage ;;
esac
