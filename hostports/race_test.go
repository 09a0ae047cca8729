//go:build race

package hostports

// raceEnabled: the race detector slows everything several times over,
// so cost figures are not checked.
const raceEnabled = true
