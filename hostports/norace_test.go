//go:build !race

package hostports

const raceEnabled = false
