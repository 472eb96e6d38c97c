package mysql

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"time"
)

// DialConfig describes how to log in to a database server.
type DialConfig struct {
	User     string
	Password string
	DB       string
	// Caps are the capabilities requested; the server's are intersected.
	Caps      uint32
	Collation byte
	// TLS, when set, upgrades the connection before authenticating.
	TLS *tls.Config
	// Dialer opens the TCP connection; nil uses a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ServerInfo is what the server announced in its greeting.
type ServerInfo struct {
	Version   string
	ConnID    uint32
	Caps      uint32
	Collation byte
	Status    uint16
}

// Greeting is a decoded HandshakeV10 packet.
type Greeting struct {
	ServerInfo
	Scramble []byte
	Plugin   string
}

// ParseGreeting decodes a HandshakeV10 packet.
func ParseGreeting(b []byte) (Greeting, error) {
	var g Greeting
	if len(b) < 1 {
		return g, malformed("greeting: empty")
	}
	if b[0] == ErrPacket {
		e, err := ParseErr(b)
		if err != nil {
			return g, err
		}
		return g, e
	}
	if b[0] != 10 {
		return g, malformed(fmt.Sprintf("greeting: protocol version %d", b[0]))
	}
	ver, n, err := readNulString(b[1:])
	if err != nil {
		return g, fmt.Errorf("greeting version: %w", err)
	}
	g.Version = string(ver)
	pos := 1 + n
	if len(b) < pos+4+8+1+2 {
		return g, malformed("greeting: short")
	}
	g.ConnID = binary.LittleEndian.Uint32(b[pos:])
	pos += 4
	g.Scramble = append([]byte(nil), b[pos:pos+8]...)
	pos += 9
	g.Caps = uint32(binary.LittleEndian.Uint16(b[pos:]))
	pos += 2
	if len(b) < pos+1+2+2+1+10 {
		return g, nil
	}
	g.Collation = b[pos]
	g.Status = binary.LittleEndian.Uint16(b[pos+1:])
	g.Caps |= uint32(binary.LittleEndian.Uint16(b[pos+3:])) << 16
	authLen := int(b[pos+5])
	pos += 6 + 10
	if g.Caps&ClientSecureConnection != 0 {
		l := max(13, authLen-8)
		if len(b) < pos+l {
			return g, malformed("greeting: short scramble")
		}
		part := b[pos : pos+l]
		part = bytes.TrimRight(part, "\x00")
		g.Scramble = append(g.Scramble, part...)
		pos += l
	}
	if g.Caps&ClientPluginAuth != 0 && pos < len(b) {
		p, _, err := readNulString(b[pos:])
		if err != nil {
			p = b[pos:]
		}
		g.Plugin = string(p)
	}
	return g, nil
}

// Dial connects to addr and logs in. The returned Conn is at a command
// boundary.
func Dial(ctx context.Context, addr string, cfg DialConfig, pool *BufferPool) (*Conn, ServerInfo, error) {
	dial := cfg.Dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, ServerInfo{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	c := NewConn(nc, pool)
	info, err := clientHandshake(c, cfg)
	if err != nil {
		c.Close()
		return nil, ServerInfo{}, fmt.Errorf("log in to %s as %s: %w", addr, cfg.User, err)
	}
	_ = c.NetConn().SetDeadline(time.Time{})
	return c, info, nil
}

func clientHandshake(c *Conn, cfg DialConfig) (ServerInfo, error) {
	pkt, err := c.ReadPacket()
	if err != nil {
		return ServerInfo{}, fmt.Errorf("read greeting: %w", err)
	}
	g, err := ParseGreeting(pkt)
	if err != nil {
		return ServerInfo{}, err
	}
	if g.Caps&ClientProtocol41 == 0 {
		return ServerInfo{}, fmt.Errorf("server does not speak protocol 4.1")
	}
	caps := cfg.Caps&g.Caps | ClientProtocol41 | ClientSecureConnection | ClientPluginAuth
	// The response below is written in exactly this form: a flag for a part
	// that is not written would make the server misread what follows.
	caps &^= ClientConnectWithDB | ClientSSL | ClientConnectAttrs
	if cfg.DB != "" {
		caps |= ClientConnectWithDB
	}
	isTLS := false
	if cfg.TLS != nil {
		if g.Caps&ClientSSL == 0 {
			return ServerInfo{}, fmt.Errorf("server does not support TLS")
		}
		caps |= ClientSSL
		req := binary.LittleEndian.AppendUint32(nil, caps)
		req = binary.LittleEndian.AppendUint32(req, MaxPayloadLen)
		req = append(req, cfg.Collation)
		req = append(req, make([]byte, 23)...)
		if err := c.WritePacket(req); err != nil {
			return ServerInfo{}, err
		}
		if err := c.Flush(); err != nil {
			return ServerInfo{}, err
		}
		tc := tls.Client(c.NetConn(), cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return ServerInfo{}, fmt.Errorf("TLS handshake: %w", err)
		}
		c.SetNetConn(tc)
		isTLS = true
	}
	plugin := g.Plugin
	if plugin == "" {
		plugin = AuthNativePassword
	}
	authResp, err := authResponse(plugin, g.Scramble, cfg.Password, isTLS)
	if err != nil {
		return ServerInfo{}, err
	}
	resp := binary.LittleEndian.AppendUint32(nil, caps)
	resp = binary.LittleEndian.AppendUint32(resp, MaxPayloadLen)
	resp = append(resp, cfg.Collation)
	resp = append(resp, make([]byte, 23)...)
	resp = append(resp, cfg.User...)
	resp = append(resp, 0)
	resp = append(resp, byte(len(authResp)))
	resp = append(resp, authResp...)
	if cfg.DB != "" {
		resp = append(resp, cfg.DB...)
		resp = append(resp, 0)
	}
	resp = append(resp, plugin...)
	resp = append(resp, 0)
	if err := c.WritePacket(resp); err != nil {
		return ServerInfo{}, err
	}
	if err := c.Flush(); err != nil {
		return ServerInfo{}, err
	}
	if err := clientAuthLoop(c, cfg, plugin, g.Scramble, isTLS); err != nil {
		return ServerInfo{}, err
	}
	info := g.ServerInfo
	info.Caps = caps
	return info, nil
}

func authResponse(plugin string, scramble []byte, password string, isTLS bool) ([]byte, error) {
	switch plugin {
	case AuthNativePassword, AuthCachingSHA2Password:
		// The scramble comes from the server: a short one must fail the
		// login, not panic in the hash functions that take 20 bytes.
		if len(scramble) < 20 {
			return nil, malformed(fmt.Sprintf("%s scramble of %d bytes", plugin, len(scramble)))
		}
		if plugin == AuthNativePassword {
			return ScrambleNative(scramble, password), nil
		}
		return ScrambleCachingSHA2(scramble, password), nil
	case AuthClearPassword:
		if !isTLS {
			return nil, fmt.Errorf("server asks for a clear-text password without TLS; refusing")
		}
		return append([]byte(password), 0), nil
	default:
		return nil, fmt.Errorf("unsupported authentication plugin %q", plugin)
	}
}

// clientAuthLoop reads the server's answers to our auth response until OK
// or ERR, following auth switches and caching_sha2_password exchanges.
func clientAuthLoop(c *Conn, cfg DialConfig, plugin string, scramble []byte, isTLS bool) error {
	for range 8 {
		pkt, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("read auth result: %w", err)
		}
		if len(pkt) == 0 {
			return malformed("empty auth packet")
		}
		switch pkt[0] {
		case OKPacket:
			return nil
		case ErrPacket:
			e, err := ParseErr(pkt)
			if err != nil {
				return err
			}
			return e
		case AuthSwitchRequest:
			name, n, err := readNulString(pkt[1:])
			if err != nil {
				return fmt.Errorf("auth switch: %w", err)
			}
			plugin = string(name)
			scramble = bytes.TrimRight(pkt[1+n:], "\x00")
			resp, err := authResponse(plugin, scramble, cfg.Password, isTLS)
			if err != nil {
				return err
			}
			if err := c.WritePacket(resp); err != nil {
				return err
			}
			if err := c.Flush(); err != nil {
				return err
			}
		case AuthMoreData:
			if plugin != AuthCachingSHA2Password || len(pkt) < 2 {
				return fmt.Errorf("unexpected auth data for %s", plugin)
			}
			switch pkt[1] {
			case cachingSHA2FastAuthOK:
				continue
			case cachingSHA2FullAuth:
				var out []byte
				if isTLS {
					out = append([]byte(cfg.Password), 0)
				} else {
					if err := c.WritePacket([]byte{cachingSHA2RequestPublicKey}); err != nil {
						return err
					}
					if err := c.Flush(); err != nil {
						return err
					}
					keyPkt, err := c.ReadPacket()
					if err != nil {
						return fmt.Errorf("read server public key: %w", err)
					}
					if len(keyPkt) > 0 && keyPkt[0] == ErrPacket {
						// The server refuses to send a key: say why.
						e, err := ParseErr(keyPkt)
						if err != nil {
							return err
						}
						return e
					}
					if len(keyPkt) < 2 || keyPkt[0] != AuthMoreData {
						return fmt.Errorf("bad public key packet")
					}
					if out, err = EncryptPassword(cfg.Password, scramble, keyPkt[1:]); err != nil {
						return err
					}
				}
				if err := c.WritePacket(out); err != nil {
					return err
				}
				if err := c.Flush(); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unexpected caching_sha2_password state %d", pkt[1])
			}
		default:
			return fmt.Errorf("unexpected auth packet 0x%02x", pkt[0])
		}
	}
	return fmt.Errorf("authentication did not finish")
}

// ClientChangeUser sends COM_CHANGE_USER on a logged-in connection and follows
// the authentication exchange. On success the server has reset the session.
func ClientChangeUser(c *Conn, caps uint32, cfg DialConfig) error {
	b := []byte{ComChangeUser}
	b = append(b, cfg.User...)
	b = append(b, 0)
	b = append(b, 0) // empty auth response: the server switches methods with a fresh scramble
	b = append(b, cfg.DB...)
	b = append(b, 0)
	b = append(b, cfg.Collation, 0)
	if caps&ClientPluginAuth != 0 {
		b = append(b, AuthNativePassword...)
		b = append(b, 0)
	}
	if err := c.WriteCommand(b); err != nil {
		return err
	}
	return clientAuthLoop(c, cfg, AuthNativePassword, nil, false)
}
