package store

import "encoding/json"

// EncodeMap encodes a metadata map for a text column ("" for none).
func EncodeMap(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// DecodeMap decodes a text column written by EncodeMap.
func DecodeMap(s string) map[string]string {
	if s == "" {
		return nil
	}
	var m map[string]string
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m
}
