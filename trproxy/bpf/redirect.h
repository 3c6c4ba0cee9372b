/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every struct and constant shared between redirect.bpf.c and user space.
 *
 * trproxy/bpf/loader.py mirrors the structs with ctypes; tests/bpf/test_loader.py compares
 * that mirror with the layout clang gives this file, so change both together.
 *
 * Conventions: IP addresses are in network byte order, exactly as the kernel hands them
 * to sock_addr/sock_ops programs (IPv4 in addr[0], the rest zero). Ports are in HOST byte
 * order. Every struct is padded explicitly so that user space sees no hidden holes.
 * trp_config's first two members (owner_start, owner_pid) never move: cleanup reads them
 * from the maps of every pinned version, whatever its other layouts.
 */
#ifndef TRPROXY_REDIRECT_H
#define TRPROXY_REDIRECT_H

#define TRP_AF_INET 2
#define TRP_AF_INET6 10
#define TRP_SOCK_STREAM 1
#define TRP_SOCK_DGRAM 2
#define TRP_DNS_PORT 53

/* Deepest cgroup level searched for a run's config (the root is level 0). */
#define TRP_MAX_CGROUP_DEPTH 16

/* trp_config.flags */
#define TRP_FLAG_SHADOW 1      /* rewrite bind(X) to bind(trp_shadow[X]) */
#define TRP_FLAG_CHECK_OWNER 2 /* fail every connect once the owner's marker socket is gone */
#define TRP_FLAG_ALLOW_ONLY 4  /* refuse redirected connects to destinations trp_dst lacks */
#define TRP_FLAG_CAPTURE 8     /* publish the run's listening ports in trp_capture: trp_lookup
				* steers connections to them from outside the run to the
				* owner's capture sockets (trp_socks) */
#define TRP_FLAG_PASS_CLOSED 16 /* leave a connect to a local port nothing listens on to
				 * the kernel (refused as without trproxy, or forwarded by
				 * NAT), counting how it ends in trp_closed / trp_reached:
				 * modes that dial real servers */

/* Map sizes (max_entries). */
#define TRP_MAX_RUNS 4096
#define TRP_MAX_LISTEN 16384
#define TRP_MAX_SHADOW 4096
#define TRP_MAX_CONNS 65536
#define TRP_MAX_DSTS 16384
#define TRP_MAX_CAPTURE 16384
#define TRP_MAX_INNER 65536
#define TRP_MAX_CAPTURE_SOCKS 1024
#define TRP_MAX_DNS_SOCKS 65536

/* trp_config: key = __u64 cgroup id of a run (the inode number of its cgroup directory). */
struct trp_config {
	__u64 owner_start; /* owner's start time: /proc/<pid>/stat field 22 (clock ticks) */
	__u32 owner_pid;   /* the trproxy process that owns the run; dead owner = leftover */
	__u32 proxy_ip4;   /* where IPv4 (and v4-mapped IPv6) connections go */
	__u32 proxy_ip6[4]; /* where IPv6 connections go */
	__u16 proxy_port;  /* the proxy listens on proxy_ip4:port and [proxy_ip6]:port */
	__u16 flags;       /* TRP_FLAG_* */
	__u16 alive_port;  /* the owner's marker: a UDP socket on 127.0.0.1:alive_port */
	__u16 refuse_port; /* a TCP port the owner holds bound on 127.0.0.1 and ::1, never
			    * listening: a connect sent there fails with ECONNREFUSED */
	__u16 dns_port;    /* the proxy's UDP port for DNS on proxy_ip4/proxy_ip6; 0 = the
			    * run's DNS over UDP is not redirected */
	__u16 _pad[3];
};

/* Key of trp_listen and trp_shadow: a port of one run. */
struct trp_port_key {
	__u64 cgroup_id;
	__u16 port;
	__u16 _pad[3];
};

/* trp_listen value: a port that sockets of the run listen on (connections from the run to
 * it on a local address are not redirected). */
struct trp_listen {
	__u32 count;       /* listening sockets on the port (SO_REUSEPORT, v4 + v6) */
	__u16 bound_port;  /* the port actually bound: the shadow port if shadowed */
	__u16 _pad;
};

/* trp_shadow value: __u32 shadow port (bind(key.port) becomes bind(value)). */

/* Key of trp_orig: the redirected connection's 4-tuple as the proxy sees it once accepted. */
struct trp_tuple_key {
	__u32 saddr[4];    /* client address (the accepted socket's peer) */
	__u32 daddr[4];    /* proxy address (the accepted socket's local address) */
	__u16 sport;       /* client port */
	__u16 dport;       /* proxy port */
	__u8 family;       /* TRP_AF_INET (also v4-mapped) or TRP_AF_INET6: the wire family */
	__u8 _pad[3];
};

/* trp_orig value, the original destination kept with each redirected socket, and
 * trp_dns's value (key: the __u64 socket cookie of a UDP socket of the run whose DNS was
 * redirected: the proxy finds the cookie of a datagram's sender with sock_diag). */
struct trp_orig_dst {
	__u64 cgroup_id;   /* the run that redirected it */
	__u32 addr[4];     /* as the app passed it to connect(): v4-mapped stays mapped */
	__u16 port;
	__u8 family;       /* the app's socket family; 0 = not redirected */
	__u8 _pad[5];
};

/* Key of trp_dst (value: __u32 TRP_DST_*), trp_refused, trp_closed and trp_reached (value:
 * __u64 connects): a destination of one run. In trp_refused it is the address as dialed,
 * in trp_closed and trp_reached the peer the kernel connected to (0.0.0.0 became
 * 127.0.0.1), a v4-mapped address as plain IPv4 in each; in trp_dst every loopback or unspecified
 * address (127.0.0.0/8, ::1, 0.0.0.0, ::, and v4-mapped ones) is the one key {family
 * TRP_DST_LOOPBACK, addr 0}, as the store treats them as one place (clients dial localhost
 * as 127.0.0.1 or ::1; a connect to 0.0.0.0 or :: reaches loopback). */
struct trp_dst_key {
	__u64 cgroup_id;
	__u32 addr[4];
	__u16 port;
	__u8 family;       /* TRP_AF_INET, TRP_AF_INET6 or TRP_DST_LOOPBACK */
	__u8 _pad[5];
};

#define TRP_DST_LOOPBACK 1
#define TRP_DST_ALLOW 1
#define TRP_DST_REFUSE 2

/* trp_capture: key __u32 port (host order) that a TRP_FLAG_CAPTURE run listens on.
 * trp_inner: key trp_tuple_key of a connection (saddr/sport the client, daddr/dport the
 * listener) that trp_lookup leaves alone (the run's own, and the owner's relay to the
 * app), value __u32 1. */
struct trp_capture {
	__u64 cgroup_id;   /* the run */
	__u8 families;     /* TRP_CAPTURE_V4 | TRP_CAPTURE_V6: families the run listens in
			    * (an IPv6 wildcard listener counts for IPv4 too: dual-stack) */
	__u8 _pad[7];
};

#define TRP_CAPTURE_V4 1
#define TRP_CAPTURE_V6 2

/* Key of trp_socks (a sockhash): the owner's capture socket of one run and family. */
struct trp_capture_key {
	__u64 cgroup_id;
	__u8 family;       /* TRP_AF_INET or TRP_AF_INET6: the connection's family */
	__u8 _pad[7];
};

/* Per-socket state (BPF_MAP_TYPE_SK_STORAGE, freed with the socket). */
struct trp_sock_state {
	struct trp_orig_dst orig;  /* set by connect4/6 when redirected */
	__u64 listen_cgroup_id;    /* run whose trp_listen counts this socket; 0 = none */
	__u16 listen_port;         /* its key port in trp_listen */
	__u16 requested_port;      /* bind() port before a shadow rewrite; 0 = not shadowed */
	__u32 _pad;
	__u64 alive_run;           /* set by the owner on its marker socket: the run's cgroup id */
	__u64 passed_run;          /* set by connect4/6 when the connect was left to the kernel
				    * at a closed local port: the run, until sockops counted how
				    * the connect ended; 0 = none */
};

#endif /* TRPROXY_REDIRECT_H */
