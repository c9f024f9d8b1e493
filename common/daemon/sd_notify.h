#pragma once
// The systemd notification protocol (sd_notify(3)), spoken directly: one datagram of
// newline-separated VAR=VALUE assignments to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
// or an abstract name written with a leading '@'). Written by hand rather than linking
// libsystemd: the protocol is one sendto(2), and the daemons then run the same with or without
// systemd (no socket set: nothing is sent).
//
//   sd::notify("READY=1\nSTATUS=2 tunnels up, link/body 0.9%");
//
// Any thread; never blocks (the socket is non-blocking: a full queue drops the message).

#include <string>
#include <string_view>

namespace coilgun::sd {

// Sends |state|. Returns false when $NOTIFY_SOCKET is unset or the send failed.
bool notify(std::string_view state);

// "RELOADING=1\nMONOTONIC_USEC=<now>": what a Type=notify-reload unit expects on SIGHUP (plain
// Type=notify units accept it too).
std::string reloading_state();

}  // namespace coilgun::sd
