package sim

import "math"

// The simulator draws its randomness from hashes of (seed, step, key)
// rather than from a shared generator, so a value does not depend on the
// order in which series are visited and every run of a seed is identical.

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func hash(a ...uint64) uint64 {
	h := uint64(0x243f6a8885a308d3)
	for _, v := range a {
		h = mix64(h ^ v)
	}
	return h
}

// stream is a small deterministic generator (splitmix64).
type stream struct{ s uint64 }

func newStream(a ...uint64) stream { return stream{s: hash(a...)} }

func (r *stream) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float returns a value in [0, 1).
func (r *stream) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// normal returns a standard normal value (Box-Muller).
func (r *stream) normal() float64 {
	u1 := r.float()
	if u1 < 1e-300 {
		u1 = 1e-300
	}
	u2 := r.float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// lognormal returns a value of the log-normal distribution with the given
// median and sigma.
func (r *stream) lognormal(median, sigma float64) float64 {
	return median * math.Exp(sigma*r.normal())
}

// lognormalCDF is P(X <= x) for a log-normal distribution.
func lognormalCDF(x, median, sigma float64) float64 {
	if x <= 0 {
		return 0
	}
	if sigma <= 0 {
		if x >= median {
			return 1
		}
		return 0
	}
	return 0.5 * math.Erfc(-(math.Log(x)-math.Log(median))/(sigma*math.Sqrt2))
}

// lognormalMean is the mean of a log-normal distribution.
func lognormalMean(median, sigma float64) float64 {
	return median * math.Exp(sigma*sigma/2)
}
