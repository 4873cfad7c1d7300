package main

// A minimal TLS 1.3 client: X25519 key share, TLS_AES_128_GCM_SHA256, and a
// signature_algorithms extension the caller chooses. crypto/tls offers no way
// to restrict the signature schemes a client offers, and that is what makes a
// dual-certificate server (nginx with two ssl_certificate lines, Portico with
// an RSA and an ECDSA certificate) pick one key type or the other.
//
// It does the whole handshake the server sees (ClientHello; ServerHello …
// Finished read, decrypted and the server's Finished checked; client Finished
// sent) and, unless asked to (check mode), skips the client-side work a
// server does not pay for: the certificate chain is not verified and the
// CertificateVerify signature is not checked. That keeps the generator cheap
// on a machine whose cores it shares with the server it measures.

import (
	"bufio"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Signature schemes (RFC 8446 §4.2.3).
const (
	ecdsaP256SHA256 uint16 = 0x0403
	ecdsaP384SHA384 uint16 = 0x0503
	ecdsaP521SHA512 uint16 = 0x0603
	pssRSAESHA256   uint16 = 0x0804
	pssRSAESHA384   uint16 = 0x0805
	pssRSAESHA512   uint16 = 0x0806
)

var (
	ecdsaSchemes = []uint16{ecdsaP256SHA256, ecdsaP384SHA384, ecdsaP521SHA512}
	rsaSchemes   = []uint16{pssRSAESHA256, pssRSAESHA384, pssRSAESHA512}
)

func schemeFamily(s uint16) string {
	switch s {
	case ecdsaP256SHA256, ecdsaP384SHA384, ecdsaP521SHA512:
		return "ecdsa"
	case pssRSAESHA256, pssRSAESHA384, pssRSAESHA512, 0x0401, 0x0501, 0x0601:
		return "rsa"
	}
	return fmt.Sprintf("0x%04x", s)
}

const (
	recordHandshake = 22
	recordCCS       = 20
	recordAlert     = 21
	recordAppData   = 23

	msgServerHello   = 2
	msgEncryptedExts = 8
	msgCertificate   = 11
	msgCertVerify    = 15
	msgFinished      = 20

	x25519Group     = 0x001d
	tlsAES128GCM256 = 0x1301
)

// helloRetryRandom is the ServerHello.random of a HelloRetryRequest.
var helloRetryRandom = []byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

type clientOptions struct {
	addr    string
	sni     string   // "" sends no server_name
	schemes []uint16 // signature_algorithms
	alpn    string   // "" sends no ALPN
	timeout time.Duration
	// check: verify the CertificateVerify signature, then send
	// "GET / HTTP/1.1" over the new connection and return the status line.
	check bool
}

type result struct {
	scheme     uint16 // the server's CertificateVerify scheme
	statusLine string // check mode only
	leaf       *x509.Certificate
}

// handshake dials, does one full TLS 1.3 handshake and closes.
func handshake(o clientOptions) (result, error) {
	var res result
	d := net.Dialer{Timeout: o.timeout}
	conn, err := d.Dial("tcp", o.addr)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(o.timeout))

	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return res, err
	}
	ch := clientHello(o, priv.PublicKey().Bytes())
	transcript := sha256.New()
	transcript.Write(ch)
	if _, err := conn.Write(record(recordHandshake, 0x0301, ch)); err != nil {
		return res, err
	}

	rr := &recordReader{br: bufio.NewReaderSize(conn, 16<<10)}
	// ServerHello, in the clear
	msg, err := rr.handshakeMessage()
	if err != nil {
		return res, fmt.Errorf("reading ServerHello: %w", err)
	}
	if msg[0] != msgServerHello {
		return res, fmt.Errorf("expected ServerHello, got handshake type %d", msg[0])
	}
	peer, err := parseServerHello(msg[4:])
	if err != nil {
		return res, err
	}
	transcript.Write(msg)
	peerKey, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return res, err
	}
	shared, err := priv.ECDH(peerKey)
	if err != nil {
		return res, err
	}

	// key schedule (RFC 8446 §7.1) with SHA-256
	zeros := make([]byte, 32)
	early := extract(zeros, nil)
	hsSecret := extract(shared, deriveSecret(early, "derived", emptyHash()))
	thHello := transcript.Sum(nil)
	cHS := deriveSecret(hsSecret, "c hs traffic", thHello)
	sHS := deriveSecret(hsSecret, "s hs traffic", thHello)
	rr.cipher = newTrafficCipher(sHS)

	// EncryptedExtensions, Certificate, CertificateVerify, Finished
	var certTranscript []byte // transcript hash before CertificateVerify
	for {
		msg, err := rr.handshakeMessage()
		if err != nil {
			return res, fmt.Errorf("reading the server's flight: %w", err)
		}
		switch msg[0] {
		case msgEncryptedExts:
		case msgCertificate:
			if o.check {
				if res.leaf, err = parseLeaf(msg[4:]); err != nil {
					return res, err
				}
			}
		case msgCertVerify:
			certTranscript = transcript.Sum(nil)
			body := msg[4:]
			if len(body) < 4 {
				return res, errors.New("short CertificateVerify")
			}
			res.scheme = binary.BigEndian.Uint16(body)
			if o.check {
				sig := body[2:] // length-prefixed
				if err := verifyCertVerify(res.leaf, res.scheme, certTranscript, sig); err != nil {
					return res, err
				}
			}
		case msgFinished:
			want := finishedMAC(sHS, transcript.Sum(nil))
			if !hmac.Equal(want, msg[4:]) {
				return res, errors.New("the server's Finished does not verify")
			}
		default:
			return res, fmt.Errorf("unexpected handshake message type %d", msg[0])
		}
		transcript.Write(msg)
		if msg[0] == msgFinished {
			break
		}
	}
	if certTranscript == nil {
		return res, errors.New("the server sent no CertificateVerify")
	}
	thServerFinished := transcript.Sum(nil)

	// client Finished
	fin := append([]byte{msgFinished, 0, 0, 32}, finishedMAC(cHS, thServerFinished)...)
	w := newTrafficCipher(cHS)
	if _, err := conn.Write(w.seal(recordHandshake, fin)); err != nil {
		return res, err
	}

	if !o.check {
		// Close our side and wait for the server to close its own: the
		// server has then read our Finished (and answered the end of the
		// stream), so the handshake is complete on its side too.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		io.Copy(io.Discard, rr.br)
		return res, nil
	}

	// check mode: one request on the new connection
	master := extract(zeros, deriveSecret(hsSecret, "derived", emptyHash()))
	cAP := deriveSecret(master, "c ap traffic", thServerFinished)
	sAP := deriveSecret(master, "s ap traffic", thServerFinished)
	w = newTrafficCipher(cAP)
	rr.cipher = newTrafficCipher(sAP)
	host := o.sni
	if host == "" {
		host = "bench.test"
	}
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: portico-bench-handshake\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write(w.seal(recordAppData, []byte(req))); err != nil {
		return res, err
	}
	var resp []byte
	for {
		typ, data, err := rr.next()
		if err != nil {
			if errors.Is(err, io.EOF) && len(resp) > 0 {
				break
			}
			return res, fmt.Errorf("reading the response: %w", err)
		}
		if typ == recordAlert {
			break // close_notify
		}
		if typ == recordAppData {
			resp = append(resp, data...)
		}
		// recordHandshake: NewSessionTicket, ignored
		if complete(resp) {
			break
		}
	}
	line, _, _ := strings.Cut(string(resp), "\r\n")
	res.statusLine = line
	return res, nil
}

// complete reports whether resp holds a whole response with a Content-Length.
func complete(resp []byte) bool {
	head, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok {
		return false
	}
	for _, l := range strings.Split(head, "\r\n") {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(k), "content-length") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return err == nil && len(body) >= n
		}
	}
	return false
}

func clientHello(o clientOptions, pub []byte) []byte {
	var ext []byte
	if o.sni != "" {
		name := []byte(o.sni)
		b := u16(len(name) + 3)
		b = append(b, 0)
		b = append(b, u16(len(name))...)
		b = append(b, name...)
		ext = appendExt(ext, 0, b)
	}
	ext = appendExt(ext, 10, append(u16(2), u16(x25519Group)...)) // supported_groups
	var sa []byte
	for _, s := range o.schemes {
		sa = append(sa, u16(int(s))...)
	}
	ext = appendExt(ext, 13, append(u16(len(sa)), sa...)) // signature_algorithms
	if o.alpn != "" {
		p := append([]byte{byte(len(o.alpn))}, o.alpn...)
		ext = appendExt(ext, 16, append(u16(len(p)), p...))
	}
	ks := append(u16(x25519Group), u16(len(pub))...)
	ks = append(ks, pub...)
	ext = appendExt(ext, 51, append(u16(len(ks)), ks...)) // key_share
	ext = appendExt(ext, 43, []byte{2, 0x03, 0x04})       // supported_versions: TLS 1.3
	ext = appendExt(ext, 45, []byte{1, 1})                // psk_key_exchange_modes: psk_dhe_ke, as browsers send

	body := []byte{0x03, 0x03}
	random := make([]byte, 32)
	rand.Read(random)
	body = append(body, random...)
	body = append(body, 0)                                          // legacy_session_id: empty
	body = append(body, append(u16(2), u16(tlsAES128GCM256)...)...) // cipher_suites
	body = append(body, 1, 0)                                       // compression: null
	body = append(body, u16(len(ext))...)
	body = append(body, ext...)
	return append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

func parseServerHello(b []byte) (peerKey []byte, err error) {
	short := errors.New("malformed ServerHello")
	if len(b) < 2+32+1 {
		return nil, short
	}
	if string(b[2:34]) == string(helloRetryRandom) {
		return nil, errors.New("the server asked for a HelloRetryRequest (X25519 not accepted?)")
	}
	b = b[34:]
	sid := int(b[0])
	if len(b) < 1+sid+2+1+2 {
		return nil, short
	}
	b = b[1+sid:]
	if suite := binary.BigEndian.Uint16(b); suite != tlsAES128GCM256 {
		return nil, fmt.Errorf("server chose cipher suite 0x%04x", suite)
	}
	b = b[3:]
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < n {
		return nil, short
	}
	b = b[:n]
	version := 0
	for len(b) >= 4 {
		typ, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+l {
			return nil, short
		}
		data := b[4 : 4+l]
		switch typ {
		case 43:
			if l == 2 {
				version = int(binary.BigEndian.Uint16(data))
			}
		case 51:
			if l < 4 || binary.BigEndian.Uint16(data) != x25519Group {
				return nil, errors.New("the server's key share is not X25519")
			}
			kl := int(binary.BigEndian.Uint16(data[2:]))
			if len(data) < 4+kl {
				return nil, short
			}
			peerKey = data[4 : 4+kl]
		}
		b = b[4+l:]
	}
	if version != 0x0304 {
		return nil, fmt.Errorf("the server did not choose TLS 1.3 (0x%04x)", version)
	}
	if peerKey == nil {
		return nil, errors.New("ServerHello without a key share")
	}
	return peerKey, nil
}

func parseLeaf(b []byte) (*x509.Certificate, error) {
	// certificate_request_context<0..255>, certificate_list<0..2^24-1>
	if len(b) < 1 || len(b) < 1+int(b[0])+3 {
		return nil, errors.New("malformed Certificate")
	}
	b = b[1+int(b[0])+3:]
	if len(b) < 3 {
		return nil, errors.New("empty Certificate")
	}
	n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	if len(b) < 3+n {
		return nil, errors.New("malformed Certificate entry")
	}
	return x509.ParseCertificate(b[3 : 3+n])
}

func verifyCertVerify(leaf *x509.Certificate, scheme uint16, th, sig []byte) error {
	if leaf == nil {
		return errors.New("CertificateVerify before Certificate")
	}
	if len(sig) < 2 {
		return errors.New("short CertificateVerify")
	}
	sig = sig[2:]
	signed := append([]byte(strings.Repeat(" ", 64)+"TLS 1.3, server CertificateVerify\x00"), th...)
	digest := func(h crypto.Hash) []byte {
		var hh hash.Hash
		switch h {
		case crypto.SHA256:
			hh = sha256.New()
		case crypto.SHA384:
			hh = sha512.New384()
		default:
			hh = sha512.New()
		}
		hh.Write(signed)
		return hh.Sum(nil)
	}
	switch scheme {
	case ecdsaP256SHA256, ecdsaP384SHA384, ecdsaP521SHA512:
		pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("ECDSA signature from a non-ECDSA certificate")
		}
		h := map[uint16]crypto.Hash{ecdsaP256SHA256: crypto.SHA256, ecdsaP384SHA384: crypto.SHA384, ecdsaP521SHA512: crypto.SHA512}[scheme]
		if !ecdsa.VerifyASN1(pub, digest(h), sig) {
			return errors.New("bad ECDSA CertificateVerify signature")
		}
	case pssRSAESHA256, pssRSAESHA384, pssRSAESHA512:
		pub, ok := leaf.PublicKey.(*rsa.PublicKey)
		if !ok {
			return errors.New("RSA signature from a non-RSA certificate")
		}
		h := map[uint16]crypto.Hash{pssRSAESHA256: crypto.SHA256, pssRSAESHA384: crypto.SHA384, pssRSAESHA512: crypto.SHA512}[scheme]
		if err := rsa.VerifyPSS(pub, h, digest(h), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
			return fmt.Errorf("bad RSA-PSS CertificateVerify signature: %w", err)
		}
	default:
		return fmt.Errorf("unexpected CertificateVerify scheme 0x%04x", scheme)
	}
	return nil
}

// --- key schedule helpers ---

func extract(ikm, salt []byte) []byte {
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		panic(err)
	}
	return prk
}

func expandLabel(secret []byte, label string, context []byte, length int) []byte {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full)+len(context))
	info = append(info, byte(length>>8), byte(length), byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(sha256.New, secret, string(info), length)
	if err != nil {
		panic(err)
	}
	return out
}

func deriveSecret(secret []byte, label string, transcriptHash []byte) []byte {
	return expandLabel(secret, label, transcriptHash, 32)
}

func emptyHash() []byte {
	h := sha256.Sum256(nil)
	return h[:]
}

func finishedMAC(trafficSecret, transcriptHash []byte) []byte {
	m := hmac.New(sha256.New, expandLabel(trafficSecret, "finished", nil, 32))
	m.Write(transcriptHash)
	return m.Sum(nil)
}

// --- records ---

type trafficCipher struct {
	aead cipher.AEAD
	iv   []byte
	seq  uint64
}

func newTrafficCipher(secret []byte) *trafficCipher {
	block, err := aes.NewCipher(expandLabel(secret, "key", nil, 16))
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &trafficCipher{aead: aead, iv: expandLabel(secret, "iv", nil, 12)}
}

func (c *trafficCipher) nonce() []byte {
	n := make([]byte, 12)
	copy(n, c.iv)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], c.seq)
	for i := range s {
		n[4+i] ^= s[i]
	}
	c.seq++
	return n
}

// seal makes an encrypted record of the given inner content type.
func (c *trafficCipher) seal(typ byte, data []byte) []byte {
	inner := append(append([]byte(nil), data...), typ)
	hdr := []byte{recordAppData, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+c.aead.Overhead()))
	return c.aead.Seal(hdr, c.nonce(), inner, hdr)
}

func (c *trafficCipher) open(hdr, payload []byte) (byte, []byte, error) {
	plain, err := c.aead.Open(payload[:0], c.nonce(), payload, hdr)
	if err != nil {
		return 0, nil, errors.New("record does not decrypt")
	}
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, errors.New("record without a content type")
	}
	return plain[i], plain[:i], nil
}

func record(typ byte, version uint16, data []byte) []byte {
	out := []byte{typ, byte(version >> 8), byte(version), byte(len(data) >> 8), byte(len(data))}
	return append(out, data...)
}

type recordReader struct {
	br     *bufio.Reader
	cipher *trafficCipher // nil before the server's handshake keys
	hs     []byte         // handshake bytes not yet returned as messages
}

// next returns the next record's (inner) type and content, skipping
// ChangeCipherSpec; an alert is returned as an error unless it is a
// close_notify, which returns recordAlert.
func (r *recordReader) next() (byte, []byte, error) {
	for {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(r.br, hdr); err != nil {
			return 0, nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		if n > 16384+256 {
			return 0, nil, fmt.Errorf("record of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r.br, payload); err != nil {
			return 0, nil, err
		}
		typ := hdr[0]
		switch {
		case typ == recordCCS:
			continue
		case typ == recordAppData && r.cipher != nil:
			var err error
			if typ, payload, err = r.cipher.open(hdr, payload); err != nil {
				return 0, nil, err
			}
		}
		if typ == recordAlert {
			if len(payload) == 2 && payload[1] == 0 {
				return recordAlert, nil, nil
			}
			if len(payload) == 2 {
				return 0, nil, fmt.Errorf("the server sent alert %d", payload[1])
			}
			return 0, nil, errors.New("malformed alert")
		}
		return typ, payload, nil
	}
}

// handshakeMessage returns the next whole handshake message, header included.
func (r *recordReader) handshakeMessage() ([]byte, error) {
	for {
		if len(r.hs) >= 4 {
			n := int(r.hs[1])<<16 | int(r.hs[2])<<8 | int(r.hs[3])
			if len(r.hs) >= 4+n {
				msg := r.hs[:4+n]
				r.hs = r.hs[4+n:]
				return msg, nil
			}
		}
		typ, data, err := r.next()
		if err != nil {
			return nil, err
		}
		if typ == recordAlert {
			return nil, errors.New("the server closed the connection during the handshake")
		}
		if typ != recordHandshake {
			return nil, fmt.Errorf("unexpected record type %d during the handshake", typ)
		}
		r.hs = append(r.hs, data...)
	}
}

func u16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

func appendExt(b []byte, typ int, data []byte) []byte {
	b = append(b, u16(typ)...)
	b = append(b, u16(len(data))...)
	return append(b, data...)
}
