//go:build race

package config

// raceEnabled is set when the race detector, which slows everything, is on.
const raceEnabled = true
