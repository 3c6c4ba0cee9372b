/* SPDX-License-Identifier: GPL-2.0 */
/*
 * trproxy redirect: cgroup v2 socket hooks that send a run's outbound TCP connections to
 * the trproxy proxy and let the proxy find where each connection was going.
 *
 * Compiled by bcc (trproxy/bpf/loader.py), pinned once under bpffs and attached (bpf_link)
 * to every run's cgroup; all runs share the programs and maps, and per-run settings live in
 * trp_config keyed by the run's cgroup id. Programs attached to a cgroup also run for its
 * descendants (Documentation/admin-guide/cgroup-v2.rst, and BPF_PROG_ATTACH in
 * include/uapi/linux/bpf.h), so a process's run is found by walking its cgroup ancestry.
 *
 *   connect4/6  (BPF_CGROUP_INET{4,6}_CONNECT): rewrite the destination to the proxy and keep
 *               the original one in the socket's storage. Not rewritten: non-TCP sockets,
 *               the proxy's own port, and local ports that the run itself listens on.
 *   sockops     (BPF_CGROUP_SOCK_OPS): on TCP_CONNECT_CB (the local port is bound, the SYN
 *               not yet sent) copy the original destination to trp_orig keyed by the tuple
 *               that the proxy will see as its peer; on TCP_LISTEN_CB/STATE_CB keep
 *               trp_listen, the ports the run listens on.
 *   peer4/6     (BPF_CGROUP_INET{4,6}_GETPEERNAME): getpeername() returns the original peer.
 *   bind4/6     (BPF_CGROUP_INET{4,6}_BIND): with TRP_FLAG_SHADOW, bind(X) -> bind(trp_shadow[X]).
 *
 * Every program returns 1 (allow): trproxy never makes a syscall fail.
 */
#include "redirect.h"

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define trp_ntohs(x) __builtin_bswap16(x)
#define trp_ntohl(x) __builtin_bswap32(x)
#else
#define trp_ntohs(x) (x)
#define trp_ntohl(x) (x)
#endif
#define trp_htons(x) trp_ntohs(x)
#define trp_htonl(x) trp_ntohl(x)

BPF_HASH(trp_config, __u64, struct trp_config, TRP_MAX_RUNS);
BPF_HASH(trp_listen, struct trp_port_key, struct trp_listen, TRP_MAX_LISTEN);
BPF_HASH(trp_shadow, struct trp_port_key, __u32, TRP_MAX_SHADOW);
/* LRU: entries are never deleted per connection (the proxy may accept after the client
 * already closed), so old ones make room for new ones. */
BPF_TABLE("lru_hash", struct trp_tuple_key, struct trp_orig_dst, trp_orig, TRP_MAX_CONNS);
BPF_SK_STORAGE(trp_sock, struct trp_sock_state);

/* The run of the current task: its own cgroup or the deepest ancestor that has a config. */
static __always_inline struct trp_config *trp_find_run(__u64 *run_id)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct trp_config *cfg = trp_config.lookup(&id);
	if (cfg) {
		*run_id = id;
		return cfg;
	}
	struct trp_config *found = 0;
#pragma unroll
	for (int level = 1; level < TRP_MAX_CGROUP_DEPTH; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);
		if (anc == 0 || anc == id)
			break;
		struct trp_config *c = trp_config.lookup(&anc);
		if (c) {
			found = c;
			*run_id = anc;
		}
	}
	return found;
}

static __always_inline int trp_is_local4(__u32 ip)
{
	return ip == 0 || (trp_ntohl(ip) >> 24) == 127; /* 0.0.0.0 connects to this host too */
}

/* Connections the run makes to itself or to its proxy keep their destination. */
static __always_inline int trp_keep(struct trp_config *cfg, __u64 run_id, int local,
				    int to_proxy_ip, __u16 port)
{
	if (port == cfg->proxy_port && (local || to_proxy_ip))
		return 1;
	if (!local)
		return 0;
	struct trp_port_key k = {};
	k.cgroup_id = run_id;
	k.port = port;
	return trp_listen.lookup(&k) != 0;
}

int trp_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != TRP_SOCK_STREAM)
		return 1;
	__u64 run_id = 0;
	struct trp_config *cfg = trp_find_run(&run_id);
	if (!cfg)
		return 1;
	__u32 ip = ctx->user_ip4;
	__u16 port = trp_ntohs((__u16)ctx->user_port);
	if (trp_keep(cfg, run_id, trp_is_local4(ip), ip == cfg->proxy_ip4, port))
		return 1;
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1; /* out of memory: better unredirected than redirected and unknown */
	st->orig.cgroup_id = run_id;
	st->orig.addr[0] = ip;
	st->orig.addr[1] = 0;
	st->orig.addr[2] = 0;
	st->orig.addr[3] = 0;
	st->orig.port = port;
	st->orig.family = TRP_AF_INET;
	ctx->user_ip4 = cfg->proxy_ip4;
	ctx->user_port = trp_htons(cfg->proxy_port);
	return 1;
}

int trp_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != TRP_SOCK_STREAM)
		return 1;
	__u64 run_id = 0;
	struct trp_config *cfg = trp_find_run(&run_id);
	if (!cfg)
		return 1;
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__u16 port = trp_ntohs((__u16)ctx->user_port);
	/* ::ffff:a.b.c.d (RFC 4291 2.5.5.2): the kernel makes it an IPv4 connection
	 * (tcp_v6_connect -> tcp_v4_connect) and connect4 does not run for it. */
	int mapped = a0 == 0 && a1 == 0 && a2 == trp_htonl(0xffff);
	int local, to_proxy;
	if (mapped) {
		local = trp_is_local4(a3);
		to_proxy = a3 == cfg->proxy_ip4;
	} else {
		local = a0 == 0 && a1 == 0 && a2 == 0 && (a3 == 0 || a3 == trp_htonl(1));
		to_proxy = a0 == cfg->proxy_ip6[0] && a1 == cfg->proxy_ip6[1] &&
			   a2 == cfg->proxy_ip6[2] && a3 == cfg->proxy_ip6[3];
	}
	if (trp_keep(cfg, run_id, local, to_proxy, port))
		return 1;
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	st->orig.cgroup_id = run_id;
	st->orig.addr[0] = a0;
	st->orig.addr[1] = a1;
	st->orig.addr[2] = a2;
	st->orig.addr[3] = a3;
	st->orig.port = port;
	st->orig.family = TRP_AF_INET6;
	if (mapped) {
		ctx->user_ip6[3] = cfg->proxy_ip4;
	} else {
		ctx->user_ip6[0] = cfg->proxy_ip6[0];
		ctx->user_ip6[1] = cfg->proxy_ip6[1];
		ctx->user_ip6[2] = cfg->proxy_ip6[2];
		ctx->user_ip6[3] = cfg->proxy_ip6[3];
	}
	ctx->user_port = trp_htons(cfg->proxy_port);
	return 1;
}

/* TCP_CONNECT_CB: publish the original destination under the tuple the proxy will accept. */
static __always_inline void trp_publish(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (!st || st->orig.family == 0)
		return;
	struct trp_tuple_key key = {};
	/* A v4-mapped connection is IPv4 on the wire: the proxy's IPv4 listener accepts it. */
	if (skops->family == TRP_AF_INET ||
	    (st->orig.addr[0] == 0 && st->orig.addr[1] == 0 && st->orig.addr[2] == trp_htonl(0xffff))) {
		key.family = TRP_AF_INET;
		key.saddr[0] = skops->local_ip4;
	} else {
		key.family = TRP_AF_INET6;
		/* volatile: the verifier allows only 4-byte loads here, and clang would
		 * otherwise merge neighbouring words into one 8-byte load. */
		key.saddr[0] = *(volatile __u32 *)&skops->local_ip6[0];
		key.saddr[1] = *(volatile __u32 *)&skops->local_ip6[1];
		key.saddr[2] = *(volatile __u32 *)&skops->local_ip6[2];
		key.saddr[3] = *(volatile __u32 *)&skops->local_ip6[3];
	}
	key.sport = (__u16)skops->local_port;            /* host byte order */
	key.dport = (__u16)trp_ntohl(skops->remote_port); /* network order, in the high half */
	trp_orig.update(&key, &st->orig);
}

/* TCP_LISTEN_CB: count the port as one the run listens on, and watch the socket's close. */
static __always_inline void trp_listen_start(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	__u64 run_id = 0;
	if (!trp_find_run(&run_id))
		return;
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	__u16 bound = (__u16)skops->local_port;
	struct trp_port_key k = {};
	k.cgroup_id = run_id;
	k.port = st->requested_port ? st->requested_port : bound;
	struct trp_listen fresh = {};
	fresh.bound_port = bound;
	struct trp_listen *l = trp_listen.lookup_or_try_init(&k, &fresh);
	if (!l)
		return;
	__sync_fetch_and_add(&l->count, 1);
	st->listen_cgroup_id = run_id;
	st->listen_port = k.port;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* STATE_CB to TCP_CLOSE of a counted listener: uncount it. */
static __always_inline void trp_listen_stop(struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (!st || st->listen_cgroup_id == 0)
		return;
	struct trp_port_key k = {};
	k.cgroup_id = st->listen_cgroup_id;
	k.port = st->listen_port;
	st->listen_cgroup_id = 0;
	struct trp_listen *l = trp_listen.lookup(&k);
	if (!l)
		return;
	/* Not atomic with a concurrent listen() on the same port: at worst the port is
	 * forgotten early (its connections get redirected) or kept until the run ends. */
	if (l->count <= 1)
		trp_listen.delete(&k);
	else
		__sync_fetch_and_add(&l->count, -1);
}

int trp_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		trp_publish(skops, sk);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		trp_listen_start(skops, sk);
		break;
	case BPF_SOCK_OPS_STATE_CB: /* args[0] = old state, args[1] = new state */
		if (skops->args[1] == BPF_TCP_CLOSE)
			trp_listen_stop(sk);
		break;
	}
	return 1;
}

int trp_peer4(struct bpf_sock_addr *ctx)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(ctx->sk, 0, 0);
	if (st && st->orig.family == TRP_AF_INET) {
		ctx->user_ip4 = st->orig.addr[0];
		ctx->user_port = trp_htons(st->orig.port);
	}
	return 1;
}

int trp_peer6(struct bpf_sock_addr *ctx)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(ctx->sk, 0, 0);
	if (st && st->orig.family == TRP_AF_INET6) {
		ctx->user_ip6[0] = st->orig.addr[0];
		ctx->user_ip6[1] = st->orig.addr[1];
		ctx->user_ip6[2] = st->orig.addr[2];
		ctx->user_ip6[3] = st->orig.addr[3];
		ctx->user_port = trp_htons(st->orig.port);
	}
	return 1;
}

/* bind(X) -> bind(trp_shadow[X]) for runs with TRP_FLAG_SHADOW; the listener is then
 * counted under X (trp_listen_start), with bound_port = the shadow port. */
static __always_inline int trp_bind(struct bpf_sock_addr *ctx)
{
	if (ctx->type != TRP_SOCK_STREAM)
		return 1;
	__u64 run_id = 0;
	struct trp_config *cfg = trp_find_run(&run_id);
	if (!cfg || !(cfg->flags & TRP_FLAG_SHADOW))
		return 1;
	__u16 port = trp_ntohs((__u16)ctx->user_port);
	struct trp_port_key k = {};
	k.cgroup_id = run_id;
	k.port = port;
	__u32 *shadow = trp_shadow.lookup(&k);
	if (!shadow)
		return 1;
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	st->requested_port = port;
	ctx->user_port = trp_htons((__u16)*shadow);
	return 1;
}

int trp_bind4(struct bpf_sock_addr *ctx)
{
	return trp_bind(ctx);
}

int trp_bind6(struct bpf_sock_addr *ctx)
{
	return trp_bind(ctx);
}
