// Package nbd is an NBD (network block device) server and client, after the
// protocol document of the NetworkBlockDevice project (doc/proto.md): fixed
// newstyle handshake, OPT_GO/OPT_INFO, structured replies, the
// base:allocation meta context, READ, WRITE, FLUSH, TRIM, WRITE_ZEROES,
// BLOCK_STATUS, multiple connections and optional TLS (STARTTLS). The
// server serves any blockdev.Device; the client is a blockdev.Device that
// keeps many requests in flight on one connection.
//
// Export names are secrets: the server never lists them (OPT_LIST answers
// with an empty list) and refuses unknown names at the handshake.
package nbd

import (
	"errors"
	"fmt"
	"syscall"
)

// Magic numbers.
const (
	nbdMagic             = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic             = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic        = 0x0003e889045565a9
	requestMagic         = 0x25609513
	simpleReplyMagic     = 0x67446698
	structuredReplyMagic = 0x668e33ef
)

// Handshake flags.
const (
	flagFixedNewstyle   = 1 << 0
	flagNoZeroes        = 1 << 1
	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option replies.
const (
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repMetaContext  = 4
	repFlagError    = 1 << 31
	repErrUnsup     = repFlagError | 1
	repErrPolicy    = repFlagError | 2
	repErrInvalid   = repFlagError | 3
	repErrTLSReqd   = repFlagError | 5
	repErrUnknown   = repFlagError | 6
	repErrShutdown  = repFlagError | 7
	repErrBlockSize = repFlagError | 8
	repErrTooBig    = repFlagError | 9
)

// Info types.
const (
	infoExport    = 0
	infoName      = 1
	infoBlockSize = 3
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
	cmdFlagDF     = 1 << 2
	cmdFlagReqOne = 1 << 3
)

// Structured reply flags and types.
const (
	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 | 1
	replyTypeErrorOffset = 1<<15 | 2
)

// base:allocation states.
const (
	stateHole = 1 << 0
	stateZero = 1 << 1
)

// MetaContextAllocation is the meta context the server and client speak.
const MetaContextAllocation = "base:allocation"

// Errno values on the wire.
const (
	errPerm      = 1
	errIO        = 5
	errNoMem     = 12
	errInval     = 22
	errNoSpc     = 28
	errOverflow  = 75
	errNotSup    = 95
	errShutdown  = 108
	maxRequest   = 32 << 20 // the largest READ or WRITE payload
	maxOptionLen = 64 << 10 // the largest option payload
	maxNameLen   = 4096
)

// Error is an error a peer reported, with its errno.
type Error struct {
	Errno   uint32
	Message string
}

func (e *Error) Error() string {
	msg := syscall.Errno(e.Errno).Error()
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return fmt.Sprintf("nbd: server error %d (%s)", e.Errno, msg)
}

// ErrUnknownExport: the server has no export of that name.
var ErrUnknownExport = errors.New("nbd: the server refused the export name")

// ErrClosed: the connection is closed.
var ErrClosed = errors.New("nbd: connection closed")

// ErrStalled: requests were waiting and the server sent nothing for
// DialOptions.StallTimeout, so the connection was broken.
var ErrStalled = errors.New("the server stopped answering")
