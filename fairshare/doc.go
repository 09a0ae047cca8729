// Package fairshare is a limit that many clients share so that none of
// them can take what the others need: the DNS forwarder's queries in
// flight (a client is a source address), the docker API proxies' buffer
// and create budgets and their connections (a client is a connection, a
// distro's proxy or the Windows side).
//
// A Pool caps the whole (Limit) and each client (Share), and keeps a
// Reserve that only a client holding nothing may take from: however many
// clients are greedy at once, one that arrives holding nothing is served.
//
// It owns only the counting. It must not know what is counted, block, or
// decide what a client is: callers name clients and say what a refusal
// means to theirs.
package fairshare
