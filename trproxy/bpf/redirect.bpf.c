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
 *               Fails the connect (EPERM) when the run's owner is gone (fail closed), and
 *               sends refused destinations to the owner's refuse port (ECONNREFUSED). With
 *               TRP_FLAG_PASS_CLOSED a connect to a local port nothing listens on (a socket
 *               lookup in the caller's netns) is left to the kernel too: refused as without
 *               trproxy (or forwarded by NAT); sockops counts its outcome.
 *   sockops     (BPF_CGROUP_SOCK_OPS): on TCP_CONNECT_CB (the local port is bound, the SYN
 *               not yet sent) copy the original destination to trp_orig keyed by the 4-tuple
 *               that the proxy will accept, and drop it again if the connection closes
 *               without ever being established (STATE_CB SYN_SENT -> CLOSE); on
 *               TCP_LISTEN_CB/STATE_CB keep trp_listen, the ports the run listens on; count
 *               how connects left to the kernel at a closed port end (trp_closed, trp_reached).
 *   peer4/6     (BPF_CGROUP_INET{4,6}_GETPEERNAME): getpeername() returns the original peer.
 *   DNS over UDP: connect4/6 of a UDP socket to port 53 and sendmsg4/6 (BPF_CGROUP_UDP{4,6}_
 *               SENDMSG: unconnected sends) to port 53 go to the proxy's DNS port instead;
 *               the original server is kept in trp_dns under the socket's cookie (a cookie
 *               is never reused, so only that very socket of the run is ever served), and
 *               recvmsg4/6 (BPF_CGROUP_UDP{4,6}_RECVMSG) make the proxy's answers come from
 *               the server the app asked (stub resolvers check that). DNS over TCP is a
 *               TCP connection like any other.
 *   bind4/6     (BPF_CGROUP_INET{4,6}_BIND): with TRP_FLAG_SHADOW, bind(X) -> bind(trp_shadow[X]).
 *   lookup      (BPF_SK_LOOKUP, attached to the owner's network namespace while it runs, not
 *               pinned): with TRP_FLAG_CAPTURE, a new TCP connection to a port the run
 *               listens on (trp_capture) goes to the owner's capture socket (trp_socks)
 *               unless the run itself made it (trp_inner, filled at TCP_CONNECT_CB) or the
 *               owner marked it as its relay to the app. The app keeps its real port, so
 *               bind() behaves as without trproxy; if the owner dies its link and sockets go
 *               and connections reach the app directly.
 *
 * Only connect4/6 ever fail a syscall, and only to keep the app away from the network.
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
/* Entries leave when the proxy takes them at accept, when the connection fails before it
 * is established, and with their run. LRU only so that a leak (a connection the proxy
 * never accepted) cannot fill the map. */
BPF_TABLE("lru_hash", struct trp_tuple_key, struct trp_orig_dst, trp_orig, TRP_MAX_CONNS);
BPF_HASH(trp_dst, struct trp_dst_key, __u32, TRP_MAX_DSTS);
BPF_HASH(trp_refused, struct trp_dst_key, __u64, TRP_MAX_DSTS);
BPF_HASH(trp_closed, struct trp_dst_key, __u64, TRP_MAX_DSTS);
BPF_HASH(trp_reached, struct trp_dst_key, __u64, TRP_MAX_DSTS);
BPF_SK_STORAGE(trp_sock, struct trp_sock_state);
/* LRU: entries of closed sockets are never looked up again (cookies are unique). */
BPF_TABLE("lru_hash", __u64, struct trp_orig_dst, trp_dns, TRP_MAX_DNS_SOCKS);
BPF_HASH(trp_capture, __u32, struct trp_capture, TRP_MAX_CAPTURE);
BPF_TABLE("lru_hash", struct trp_tuple_key, __u32, trp_inner, TRP_MAX_INNER);
/* A sockhash with a lookup() (bcc's BPF_SOCKHASH has none): returns a referenced socket. */
struct trp_socks_table_t {
	struct trp_capture_key key;
	int leaf;
	struct bpf_sock *(*lookup)(struct trp_capture_key *);
	int (*update)(struct trp_capture_key *, int *);
	int (*delete)(struct trp_capture_key *);
	u32 max_entries;
};
__attribute__((section("maps/sockhash")))
struct trp_socks_table_t trp_socks = { .max_entries = TRP_MAX_CAPTURE_SOCKS };
BPF_ANNOTATE_KV_PAIR(trp_socks, struct trp_capture_key, int);

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

/* Is the run's owner alive? It holds a UDP socket on 127.0.0.1:alive_port marked with the
 * run's id (user space writes the mark into trp_sock; nobody else can), and the kernel
 * closes it when the owner dies, however it dies. Looked up in the caller's netns. */
static __always_inline int trp_owner_alive(struct bpf_sock_addr *ctx, struct trp_config *cfg,
					   __u64 run_id)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.daddr = trp_htonl(0x7f000001);
	t.ipv4.dport = trp_htons(cfg->alive_port);
	struct bpf_sock *sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	int alive = st && st->alive_run == run_id;
	bpf_sk_release(sk);
	return alive;
}

/* Does a TCP socket listen where a local connect to `dst` (as dialed, v4-mapped as IPv4)
 * would go? Asked of the caller's netns as the kernel asks for the SYN (no established
 * socket has a zero source, so only listeners match); an unspecified address connects to
 * loopback (tcp_v4_connect, tcp_v6_connect). */
static __always_inline int trp_listening(struct bpf_sock_addr *ctx, struct trp_dst_key *dst)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	if (dst->family == TRP_AF_INET) {
		t.ipv4.daddr = dst->addr[0] ? dst->addr[0] : trp_htonl(0x7f000001);
		t.ipv4.dport = trp_htons(dst->port);
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		int any = !(dst->addr[0] | dst->addr[1] | dst->addr[2] | dst->addr[3]);
		t.ipv6.daddr[0] = dst->addr[0];
		t.ipv6.daddr[1] = dst->addr[1];
		t.ipv6.daddr[2] = dst->addr[2];
		t.ipv6.daddr[3] = any ? trp_htonl(1) : dst->addr[3];
		t.ipv6.dport = trp_htons(dst->port);
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

#define TRP_KEEP 0     /* leave the destination alone */
#define TRP_DENY 1     /* fail the connect: EPERM */
#define TRP_REFUSE 2   /* send it to the refuse port: ECONNREFUSED */
#define TRP_REDIRECT 3 /* send it to the proxy */
#define TRP_PASS 4     /* leave it to the kernel and count how it ends (a closed local port) */

/* What to do with a connect of the run to `dst` (the address as dialed, v4-mapped as IPv4).
 * local: a loopback or unspecified address (one key in trp_dst, as the store takes them for
 * one place); to_proxy: the proxy's address. Refusals of trp_dst's verdicts are counted
 * in trp_refused. A local port nothing listens on (TRP_FLAG_PASS_CLOSED) is left to the
 * kernel, which refuses it as without trproxy, where the proxy would accept the connect
 * and could only reset it; and if NAT forwards the port (a container's port published
 * without docker-proxy, an iptables REDIRECT), the connection works as without trproxy,
 * unrecorded, where refusing it would break the app. */
static __always_inline int trp_decide(struct bpf_sock_addr *ctx, struct trp_config *cfg,
				      struct trp_dst_key *dst, int local, int to_proxy)
{
	struct trp_port_key k = {};
	k.cgroup_id = dst->cgroup_id;
	k.port = dst->port;
	if (local && trp_listen.lookup(&k)) /* the run's own servers */
		return TRP_KEEP;
	if ((cfg->flags & TRP_FLAG_CHECK_OWNER) && !trp_owner_alive(ctx, cfg, dst->cgroup_id))
		return TRP_DENY;
	if (dst->port == cfg->proxy_port && (local || to_proxy))
		return TRP_KEEP;
	struct trp_dst_key place = *dst;
	if (local) {
		place.family = TRP_DST_LOOPBACK;
		place.addr[0] = 0;
		place.addr[1] = 0;
		place.addr[2] = 0;
		place.addr[3] = 0;
	}
	__u32 *verdict = trp_dst.lookup(&place);
	int refuse = verdict ? *verdict == TRP_DST_REFUSE : (cfg->flags & TRP_FLAG_ALLOW_ONLY) != 0;
	if (!refuse) {
		if (local && (cfg->flags & TRP_FLAG_PASS_CLOSED) && !trp_listening(ctx, dst))
			return TRP_PASS;
		return TRP_REDIRECT;
	}
	__u64 zero = 0;
	__u64 *count = trp_refused.lookup_or_try_init(dst, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	return TRP_REFUSE;
}

/* TRP_PASS: mark the socket so that sockops counts how its connect ends (trp_count_passed). */
static __always_inline int trp_pass(struct bpf_sock_addr *ctx, __u64 run_id)
{
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st) {
		st->orig.family = 0; /* not redirected (this socket may have been before) */
		st->passed_run = run_id;
	}
	return 1;
}

/* Keep the original destination with the socket; 0 when out of memory. */
static __always_inline int trp_remember(struct bpf_sock_addr *ctx, __u64 run_id, __u32 a0,
					__u32 a1, __u32 a2, __u32 a3, __u16 port, __u8 family)
{
	struct trp_sock_state *st =
		trp_sock.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->passed_run = 0; /* a socket connecting again after a refusal */
	st->orig.cgroup_id = run_id;
	st->orig.addr[0] = a0;
	st->orig.addr[1] = a1;
	st->orig.addr[2] = a2;
	st->orig.addr[3] = a3;
	st->orig.port = port;
	st->orig.family = family;
	return 1;
}

/* DNS over UDP (connect or sendmsg to port 53): to the proxy's DNS port, the server kept
 * under the socket's cookie (and with the socket, for getpeername). 0: fail the call. */
static __always_inline int trp_dns_query(struct bpf_sock_addr *ctx, int v6, int connecting)
{
	if (ctx->user_port != trp_htons(TRP_DNS_PORT))
		return 1;
	__u64 run_id = 0;
	struct trp_config *cfg = trp_find_run(&run_id);
	if (!cfg || !cfg->dns_port)
		return 1;
	if ((cfg->flags & TRP_FLAG_CHECK_OWNER) && !trp_owner_alive(ctx, cfg, run_id))
		return 0;
	struct trp_orig_dst orig = {};
	orig.cgroup_id = run_id;
	orig.port = TRP_DNS_PORT;
	int mapped = 0;
	if (v6) {
		orig.addr[0] = ctx->user_ip6[0];
		orig.addr[1] = ctx->user_ip6[1];
		orig.addr[2] = ctx->user_ip6[2];
		orig.addr[3] = ctx->user_ip6[3];
		orig.family = TRP_AF_INET6;
		mapped = orig.addr[0] == 0 && orig.addr[1] == 0 && orig.addr[2] == trp_htonl(0xffff);
	} else {
		orig.addr[0] = ctx->user_ip4;
		orig.family = TRP_AF_INET;
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (trp_dns.update(&cookie, &orig) != 0)
		return 0; /* out of memory: failing beats asking the real server unseen */
	if (connecting && !trp_remember(ctx, run_id, orig.addr[0], orig.addr[1], orig.addr[2],
					orig.addr[3], orig.port, orig.family))
		return 0;
	if (!v6)
		ctx->user_ip4 = cfg->proxy_ip4;
	else if (mapped)
		ctx->user_ip6[3] = cfg->proxy_ip4;
	else {
		ctx->user_ip6[0] = cfg->proxy_ip6[0];
		ctx->user_ip6[1] = cfg->proxy_ip6[1];
		ctx->user_ip6[2] = cfg->proxy_ip6[2];
		ctx->user_ip6[3] = cfg->proxy_ip6[3];
	}
	ctx->user_port = trp_htons(cfg->dns_port);
	return 1;
}

/* An answer from the proxy's DNS port to a socket whose DNS it redirected comes from the
 * server the app asked. */
static __always_inline int trp_dns_reply(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct trp_orig_dst *orig = trp_dns.lookup(&cookie);
	if (!orig)
		return 1;
	struct trp_config *cfg = trp_config.lookup(&orig->cgroup_id);
	if (!cfg || ctx->user_port != trp_htons(cfg->dns_port))
		return 1;
	if (!v6) {
		if (ctx->user_ip4 != cfg->proxy_ip4 || orig->family != TRP_AF_INET)
			return 1;
		ctx->user_ip4 = orig->addr[0];
	} else {
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
		__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		int from_v4 = a0 == 0 && a1 == 0 && a2 == trp_htonl(0xffff) && a3 == cfg->proxy_ip4;
		int from_v6 = a0 == cfg->proxy_ip6[0] && a1 == cfg->proxy_ip6[1] &&
			      a2 == cfg->proxy_ip6[2] && a3 == cfg->proxy_ip6[3];
		if (from_v4 && orig->family == TRP_AF_INET) {
			/* sendto(::ffff:a.b.c.d) ran sendmsg4 (udpv6_sendmsg -> udp_sendmsg) */
			ctx->user_ip6[3] = orig->addr[0];
			ctx->user_port = trp_htons(orig->port);
			return 1;
		}
		if (!(from_v4 || from_v6) || orig->family != TRP_AF_INET6)
			return 1;
		ctx->user_ip6[0] = orig->addr[0];
		ctx->user_ip6[1] = orig->addr[1];
		ctx->user_ip6[2] = orig->addr[2];
		ctx->user_ip6[3] = orig->addr[3];
	}
	ctx->user_port = trp_htons(orig->port);
	return 1;
}

int trp_sendmsg4(struct bpf_sock_addr *ctx)
{
	return trp_dns_query(ctx, 0, 0);
}

int trp_sendmsg6(struct bpf_sock_addr *ctx)
{
	return trp_dns_query(ctx, 1, 0);
}

int trp_recvmsg4(struct bpf_sock_addr *ctx)
{
	return trp_dns_reply(ctx, 0);
}

int trp_recvmsg6(struct bpf_sock_addr *ctx)
{
	return trp_dns_reply(ctx, 1);
}

int trp_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type == TRP_SOCK_DGRAM)
		return trp_dns_query(ctx, 0, 1);
	if (ctx->type != TRP_SOCK_STREAM)
		return 1;
	struct trp_dst_key dst = {};
	struct trp_config *cfg = trp_find_run(&dst.cgroup_id);
	if (!cfg)
		return 1;
	__u32 ip = ctx->user_ip4;
	dst.addr[0] = ip;
	dst.port = trp_ntohs((__u16)ctx->user_port);
	dst.family = TRP_AF_INET;
	int action = trp_decide(ctx, cfg, &dst, trp_is_local4(ip), ip == cfg->proxy_ip4);
	if (action == TRP_KEEP)
		return 1;
	if (action == TRP_PASS)
		return trp_pass(ctx, dst.cgroup_id);
	if (action == TRP_REFUSE) {
		ctx->user_ip4 = trp_htonl(0x7f000001);
		ctx->user_port = trp_htons(cfg->refuse_port);
		return 1;
	}
	/* Out of memory: failing is better than reaching the real destination unseen. */
	if (action == TRP_DENY ||
	    !trp_remember(ctx, dst.cgroup_id, ip, 0, 0, 0, dst.port, TRP_AF_INET))
		return 0;
	ctx->user_ip4 = cfg->proxy_ip4;
	ctx->user_port = trp_htons(cfg->proxy_port);
	return 1;
}

int trp_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type == TRP_SOCK_DGRAM)
		return trp_dns_query(ctx, 1, 1);
	if (ctx->type != TRP_SOCK_STREAM)
		return 1;
	struct trp_dst_key dst = {};
	struct trp_config *cfg = trp_find_run(&dst.cgroup_id);
	if (!cfg)
		return 1;
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	dst.port = trp_ntohs((__u16)ctx->user_port);
	/* ::ffff:a.b.c.d (RFC 4291 2.5.5.2): the kernel makes it an IPv4 connection
	 * (tcp_v6_connect -> tcp_v4_connect) and connect4 does not run for it. */
	int mapped = a0 == 0 && a1 == 0 && a2 == trp_htonl(0xffff);
	int local, to_proxy;
	if (mapped) {
		local = trp_is_local4(a3);
		to_proxy = a3 == cfg->proxy_ip4;
		dst.addr[0] = a3;
		dst.family = TRP_AF_INET;
	} else {
		int low = a0 == 0 && a1 == 0 && a2 == 0;
		local = low && (a3 == trp_htonl(1) || a3 == 0); /* ::1, :: */
		to_proxy = a0 == cfg->proxy_ip6[0] && a1 == cfg->proxy_ip6[1] &&
			   a2 == cfg->proxy_ip6[2] && a3 == cfg->proxy_ip6[3];
		dst.addr[0] = a0;
		dst.addr[1] = a1;
		dst.addr[2] = a2;
		dst.addr[3] = a3;
		dst.family = TRP_AF_INET6;
	}
	int action = trp_decide(ctx, cfg, &dst, local, to_proxy);
	if (action == TRP_KEEP)
		return 1;
	if (action == TRP_PASS)
		return trp_pass(ctx, dst.cgroup_id);
	if (action == TRP_REFUSE) {
		if (mapped) {
			ctx->user_ip6[3] = trp_htonl(0x7f000001);
		} else {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = 0;
			ctx->user_ip6[3] = trp_htonl(1);
		}
		ctx->user_port = trp_htons(cfg->refuse_port);
		return 1;
	}
	if (action == TRP_DENY ||
	    !trp_remember(ctx, dst.cgroup_id, a0, a1, a2, a3, dst.port, TRP_AF_INET6))
		return 0;
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

/* The 4-tuple under which the proxy will accept a redirected connection. */
static __always_inline void trp_tuple(struct bpf_sock_ops *skops, struct trp_sock_state *st,
				      struct trp_tuple_key *key)
{
	/* A v4-mapped connection is IPv4 on the wire: the proxy's IPv4 listener accepts it. */
	if (skops->family == TRP_AF_INET ||
	    (st->orig.addr[0] == 0 && st->orig.addr[1] == 0 && st->orig.addr[2] == trp_htonl(0xffff))) {
		key->family = TRP_AF_INET;
		key->saddr[0] = skops->local_ip4;
		key->daddr[0] = skops->remote_ip4;
	} else {
		key->family = TRP_AF_INET6;
		/* volatile: the verifier allows only 4-byte loads here, and clang would
		 * otherwise merge neighbouring words into one 8-byte load. */
		key->saddr[0] = *(volatile __u32 *)&skops->local_ip6[0];
		key->saddr[1] = *(volatile __u32 *)&skops->local_ip6[1];
		key->saddr[2] = *(volatile __u32 *)&skops->local_ip6[2];
		key->saddr[3] = *(volatile __u32 *)&skops->local_ip6[3];
		key->daddr[0] = *(volatile __u32 *)&skops->remote_ip6[0];
		key->daddr[1] = *(volatile __u32 *)&skops->remote_ip6[1];
		key->daddr[2] = *(volatile __u32 *)&skops->remote_ip6[2];
		key->daddr[3] = *(volatile __u32 *)&skops->remote_ip6[3];
	}
	key->sport = (__u16)skops->local_port;            /* host byte order */
	key->dport = (__u16)trp_ntohl(skops->remote_port); /* network order, in the high half */
}

/* TCP_CONNECT_CB: publish the original destination under the 4-tuple the proxy will
 * accept, and watch the socket's state to take it back if the connection never comes up. */
static __always_inline void trp_publish(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (!st || st->orig.family == 0)
		return;
	struct trp_tuple_key key = {};
	trp_tuple(skops, st, &key);
	trp_orig.update(&key, &st->orig);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* STATE_CB SYN_SENT -> CLOSE: refused, timed out or closed while connecting; the proxy
 * will never accept it. (An established connection stays: the proxy may accept it after
 * the client has closed, from its accept queue, and takes the entry then.) */
static __always_inline void trp_unpublish(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (!st || st->orig.family == 0)
		return;
	struct trp_tuple_key key = {};
	trp_tuple(skops, st, &key);
	trp_orig.delete(&key);
}

/* TCP_CONNECT_CB of a connect left to the kernel at a closed local port (trp_pass): watch
 * its state to count how it ends. */
static __always_inline void trp_watch_passed(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (st && st->passed_run)
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A connection's key in trp_inner, from the client's side (v4-mapped as IPv4, as on the
 * wire and as trp_lookup sees it). */
static __always_inline void trp_inner_key(struct bpf_sock_ops *skops, struct trp_tuple_key *key)
{
	if (skops->family == TRP_AF_INET) {
		key->family = TRP_AF_INET;
		key->saddr[0] = skops->local_ip4;
		key->daddr[0] = skops->remote_ip4;
	} else {
		__u32 r0 = *(volatile __u32 *)&skops->remote_ip6[0];
		__u32 r1 = *(volatile __u32 *)&skops->remote_ip6[1];
		__u32 r2 = *(volatile __u32 *)&skops->remote_ip6[2];
		__u32 r3 = *(volatile __u32 *)&skops->remote_ip6[3];
		__u32 l0 = *(volatile __u32 *)&skops->local_ip6[0];
		__u32 l1 = *(volatile __u32 *)&skops->local_ip6[1];
		__u32 l2 = *(volatile __u32 *)&skops->local_ip6[2];
		__u32 l3 = *(volatile __u32 *)&skops->local_ip6[3];
		if (r0 == 0 && r1 == 0 && r2 == trp_htonl(0xffff)) {
			key->family = TRP_AF_INET;
			key->saddr[0] = l3;
			key->daddr[0] = r3;
		} else {
			key->family = TRP_AF_INET6;
			key->saddr[0] = l0;
			key->saddr[1] = l1;
			key->saddr[2] = l2;
			key->saddr[3] = l3;
			key->daddr[0] = r0;
			key->daddr[1] = r1;
			key->daddr[2] = r2;
			key->daddr[3] = r3;
		}
	}
	key->sport = (__u16)skops->local_port;
	key->dport = (__u16)trp_ntohl(skops->remote_port);
}

/* STATE_CB out of SYN_SENT of such a connect: refused (or timed out) -> trp_closed, as
 * without trproxy; established -> trp_reached (NAT forwarded the port: not recorded). Keyed
 * by the peer the kernel connected (an unspecified address is loopback by then). */
static __always_inline void trp_count_passed(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	struct trp_sock_state *st = trp_sock.sk_storage_get(sk, 0, 0);
	if (!st || !st->passed_run)
		return;
	struct trp_tuple_key conn = {};
	trp_inner_key(skops, &conn); /* its peer, v4-mapped as IPv4 */
	struct trp_dst_key dst = {};
	dst.cgroup_id = st->passed_run;
	st->passed_run = 0;
	dst.family = conn.family;
	dst.addr[0] = conn.daddr[0];
	dst.addr[1] = conn.daddr[1];
	dst.addr[2] = conn.daddr[2];
	dst.addr[3] = conn.daddr[3];
	dst.port = conn.dport;
	__u64 zero = 0;
	__u64 *count = skops->args[1] == BPF_TCP_ESTABLISHED
			       ? trp_reached.lookup_or_try_init(&dst, &zero)
			       : trp_closed.lookup_or_try_init(&dst, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
}

/* TCP_CONNECT_CB of a connection of the run to a captured port: trp_lookup leaves it to
 * the app (the app's own connections are never recorded); forgotten when it leaves
 * SYN_SENT (the listener has been chosen by then). */
static __always_inline void trp_inner_start(struct bpf_sock_ops *skops)
{
	__u32 port = (__u16)trp_ntohl(skops->remote_port);
	if (!trp_capture.lookup(&port))
		return;
	struct trp_tuple_key key = {};
	trp_inner_key(skops, &key);
	__u32 one = 1;
	trp_inner.update(&key, &one);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void trp_inner_stop(struct bpf_sock_ops *skops)
{
	struct trp_tuple_key key = {};
	trp_inner_key(skops, &key);
	trp_inner.delete(&key);
}

/* Publish a listening port of a capturing run with the families it accepts, so that a
 * client of another family is refused by the kernel as without trproxy (and falls back,
 * as clients of `localhost` do from ::1 to 127.0.0.1). */
static __always_inline void trp_capture_add(struct bpf_sock_ops *skops, __u16 port, __u64 run_id)
{
	__u8 family = TRP_CAPTURE_V4;
	if (skops->family == TRP_AF_INET6) {
		__u32 a0 = *(volatile __u32 *)&skops->local_ip6[0];
		__u32 a1 = *(volatile __u32 *)&skops->local_ip6[1];
		__u32 a2 = *(volatile __u32 *)&skops->local_ip6[2];
		__u32 a3 = *(volatile __u32 *)&skops->local_ip6[3];
		int low = a0 == 0 && a1 == 0;
		if (low && a2 == trp_htonl(0xffff))
			family = TRP_CAPTURE_V4; /* ::ffff:a.b.c.d */
		else if (low && a2 == 0 && a3 == 0)
			family = TRP_CAPTURE_V4 | TRP_CAPTURE_V6; /* :: (dual-stack unless V6ONLY) */
		else
			family = TRP_CAPTURE_V6;
	}
	__u32 key = port;
	struct trp_capture fresh = {};
	fresh.cgroup_id = run_id;
	struct trp_capture *c = trp_capture.lookup(&key);
	if (c && c->cgroup_id == run_id)
		fresh.families = c->families;
	fresh.families |= family;
	trp_capture.update(&key, &fresh);
}

/* TCP_LISTEN_CB: count the port as one the run listens on, and watch the socket's close. */
static __always_inline void trp_listen_start(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	__u64 run_id = 0;
	struct trp_config *cfg = trp_find_run(&run_id);
	if (!cfg)
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
	if (cfg->flags & TRP_FLAG_CAPTURE)
		trp_capture_add(skops, k.port, run_id);
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
	if (l->count <= 1) {
		trp_listen.delete(&k);
		__u32 port = k.port;
		struct trp_capture *owner = trp_capture.lookup(&port);
		if (owner && owner->cgroup_id == k.cgroup_id)
			trp_capture.delete(&port);
	} else
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
		trp_watch_passed(skops, sk);
		trp_inner_start(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		trp_listen_start(skops, sk);
		break;
	case BPF_SOCK_OPS_STATE_CB: /* args[0] = old state, args[1] = new state */
		if (skops->args[0] == BPF_TCP_SYN_SENT) {
			trp_inner_stop(skops);
			trp_count_passed(skops, sk);
		}
		if (skops->args[1] == BPF_TCP_CLOSE) {
			if (skops->args[0] == BPF_TCP_SYN_SENT)
				trp_unpublish(skops, sk);
			trp_listen_stop(sk);
		}
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

/* sk_lookup: a new connection to a captured port, not made by the run nor by the owner's
 * relay, is accepted by the owner's capture socket of the run (which reads the port it was
 * for with getsockname()). Anything else, or no capture socket (its owner is gone): the
 * kernel's usual lookup. */
int trp_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != 6 /* IPPROTO_TCP */)
		return SK_PASS;
	__u32 port = ctx->local_port;
	struct trp_capture *run = trp_capture.lookup(&port);
	if (!run)
		return SK_PASS;
	if (!(run->families & (ctx->family == TRP_AF_INET ? TRP_CAPTURE_V4 : TRP_CAPTURE_V6)))
		return SK_PASS; /* the app does not listen in this family: refused as usual */
	struct trp_tuple_key key = {};
	if (ctx->family == TRP_AF_INET) {
		key.family = TRP_AF_INET;
		key.saddr[0] = ctx->remote_ip4;
		key.daddr[0] = ctx->local_ip4;
	} else {
		key.family = TRP_AF_INET6;
		key.saddr[0] = *(volatile __u32 *)&ctx->remote_ip6[0];
		key.saddr[1] = *(volatile __u32 *)&ctx->remote_ip6[1];
		key.saddr[2] = *(volatile __u32 *)&ctx->remote_ip6[2];
		key.saddr[3] = *(volatile __u32 *)&ctx->remote_ip6[3];
		key.daddr[0] = *(volatile __u32 *)&ctx->local_ip6[0];
		key.daddr[1] = *(volatile __u32 *)&ctx->local_ip6[1];
		key.daddr[2] = *(volatile __u32 *)&ctx->local_ip6[2];
		key.daddr[3] = *(volatile __u32 *)&ctx->local_ip6[3];
	}
	key.sport = trp_ntohs((__u16)ctx->remote_port);
	key.dport = (__u16)ctx->local_port;
	if (trp_inner.lookup(&key))
		return SK_PASS;
	struct trp_capture_key ck = {};
	ck.cgroup_id = run->cgroup_id;
	ck.family = key.family;
	struct bpf_sock *sk = trp_socks.lookup(&ck);
	if (!sk)
		return SK_PASS;
	bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}
