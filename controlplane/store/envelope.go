package store

import (
	"encoding/binary"
	"fmt"
)

// How the bbolt backend lays out a stored object. Every value starts with a
// format byte so that the layout can change later without a migration of
// old files: a reader knows each version it was ever written in.
//
// Version 1 (17 bytes of header, then the value as given):
//
//	version (1) | create revision (8, big endian) | mod revision (8, big endian) | value
const (
	envelopeV1         = 1
	envelopeHeaderSize = 1 + 8 + 8
)

// encodeEnvelope returns the stored form of one object.
func encodeEnvelope(createRev, modRev uint64, value []byte) []byte {
	buf := make([]byte, envelopeHeaderSize+len(value))
	buf[0] = envelopeV1
	binary.BigEndian.PutUint64(buf[1:9], createRev)
	binary.BigEndian.PutUint64(buf[9:17], modRev)
	copy(buf[envelopeHeaderSize:], value)
	return buf
}

// decodeEnvelope parses a stored object. The returned value is a copy, so it
// outlives the transaction that read it.
func decodeEnvelope(data []byte) (createRev, modRev uint64, value []byte, err error) {
	if len(data) == 0 {
		return 0, 0, nil, fmt.Errorf("empty envelope: %w", ErrFormat)
	}
	if data[0] != envelopeV1 {
		return 0, 0, nil, fmt.Errorf("envelope version %d (this build reads %d): %w", data[0], envelopeV1, ErrFormat)
	}
	if len(data) < envelopeHeaderSize {
		return 0, 0, nil, fmt.Errorf("envelope of %d bytes is shorter than its header: %w", len(data), ErrFormat)
	}
	createRev = binary.BigEndian.Uint64(data[1:9])
	modRev = binary.BigEndian.Uint64(data[9:17])
	value = make([]byte, len(data)-envelopeHeaderSize)
	copy(value, data[envelopeHeaderSize:])
	return createRev, modRev, value, nil
}
