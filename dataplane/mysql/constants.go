// Package mysql implements the MySQL/MariaDB client/server wire protocol as
// the data-plane node needs it: packet framing with sequence checks, the
// server side of the handshake towards clients, the client side towards
// database servers, and parsers for the few packets a proxy must inspect
// (OK, ERR, EOF, column counts, prepare responses). Rows are never decoded.
package mysql

// Capability flags (protocol::CapabilityFlags).
const (
	ClientLongPassword               uint32 = 1 << 0
	ClientFoundRows                  uint32 = 1 << 1
	ClientLongFlag                   uint32 = 1 << 2
	ClientConnectWithDB              uint32 = 1 << 3
	ClientNoSchema                   uint32 = 1 << 4
	ClientCompress                   uint32 = 1 << 5
	ClientODBC                       uint32 = 1 << 6
	ClientLocalFiles                 uint32 = 1 << 7
	ClientIgnoreSpace                uint32 = 1 << 8
	ClientProtocol41                 uint32 = 1 << 9
	ClientInteractive                uint32 = 1 << 10
	ClientSSL                        uint32 = 1 << 11
	ClientIgnoreSigpipe              uint32 = 1 << 12
	ClientTransactions               uint32 = 1 << 13
	ClientReserved                   uint32 = 1 << 14
	ClientSecureConnection           uint32 = 1 << 15
	ClientMultiStatements            uint32 = 1 << 16
	ClientMultiResults               uint32 = 1 << 17
	ClientPSMultiResults             uint32 = 1 << 18
	ClientPluginAuth                 uint32 = 1 << 19
	ClientConnectAttrs               uint32 = 1 << 20
	ClientPluginAuthLenencClientData uint32 = 1 << 21
	ClientCanHandleExpiredPasswords  uint32 = 1 << 22
	ClientSessionTrack               uint32 = 1 << 23
	ClientDeprecateEOF               uint32 = 1 << 24
)

// Commands (the first byte of a client command packet).
const (
	ComSleep            byte = 0x00
	ComQuit             byte = 0x01
	ComInitDB           byte = 0x02
	ComQuery            byte = 0x03
	ComFieldList        byte = 0x04
	ComCreateDB         byte = 0x05
	ComDropDB           byte = 0x06
	ComRefresh          byte = 0x07
	ComShutdown         byte = 0x08
	ComStatistics       byte = 0x09
	ComProcessInfo      byte = 0x0a
	ComConnect          byte = 0x0b
	ComProcessKill      byte = 0x0c
	ComDebug            byte = 0x0d
	ComPing             byte = 0x0e
	ComTime             byte = 0x0f
	ComDelayedInsert    byte = 0x10
	ComChangeUser       byte = 0x11
	ComBinlogDump       byte = 0x12
	ComTableDump        byte = 0x13
	ComConnectOut       byte = 0x14
	ComRegisterSlave    byte = 0x15
	ComStmtPrepare      byte = 0x16
	ComStmtExecute      byte = 0x17
	ComStmtSendLongData byte = 0x18
	ComStmtClose        byte = 0x19
	ComStmtReset        byte = 0x1a
	ComSetOption        byte = 0x1b
	ComStmtFetch        byte = 0x1c
	ComDaemon           byte = 0x1d
	ComBinlogDumpGTID   byte = 0x1e
	ComResetConnection  byte = 0x1f
)

// Server status flags (in OK and EOF packets).
const (
	StatusInTrans             uint16 = 0x0001
	StatusAutocommit          uint16 = 0x0002
	StatusMoreResultsExists   uint16 = 0x0008
	StatusNoGoodIndexUsed     uint16 = 0x0010
	StatusNoIndexUsed         uint16 = 0x0020
	StatusCursorExists        uint16 = 0x0040
	StatusLastRowSent         uint16 = 0x0080
	StatusDBDropped           uint16 = 0x0100
	StatusNoBackslashEscapes  uint16 = 0x0200
	StatusMetadataChanged     uint16 = 0x0400
	StatusQueryWasSlow        uint16 = 0x0800
	StatusPSOutParams         uint16 = 0x1000
	StatusInTransReadonly     uint16 = 0x2000
	StatusSessionStateChanged uint16 = 0x4000
)

// Session state change types (in the OK packet's session state info).
const (
	SessionTrackSystemVariables            byte = 0x00
	SessionTrackSchema                     byte = 0x01
	SessionTrackStateChange                byte = 0x02
	SessionTrackGTIDs                      byte = 0x03
	SessionTrackTransactionCharacteristics byte = 0x04
	SessionTrackTransactionState           byte = 0x05
)

// Packet headers.
const (
	OKPacket          byte = 0x00
	EOFPacket         byte = 0xfe
	ErrPacket         byte = 0xff
	LocalInfilePacket byte = 0xfb
	AuthMoreData      byte = 0x01
	AuthSwitchRequest byte = 0xfe
)

// COM_SET_OPTION values.
const (
	OptionMultiStatementsOn  uint16 = 0
	OptionMultiStatementsOff uint16 = 1
)

// COM_STMT_EXECUTE cursor flags.
const (
	CursorTypeNoCursor byte = 0x00
	CursorTypeReadOnly byte = 0x01
)

// MaxPayloadLen is the largest payload one wire packet carries; a longer
// payload continues in the next packet.
const MaxPayloadLen = 1<<24 - 1

// Authentication plugin names.
const (
	AuthNativePassword      = "mysql_native_password"
	AuthCachingSHA2Password = "caching_sha2_password"
	AuthClearPassword       = "mysql_clear_password"
	AuthSHA256Password      = "sha256_password"
)

// caching_sha2_password protocol bytes.
const (
	cachingSHA2RequestPublicKey byte = 0x02
	cachingSHA2FastAuthOK       byte = 0x03
	cachingSHA2FullAuth         byte = 0x04
)

// Error codes used by the proxy itself.
const (
	ERConCountError            uint16 = 1040
	ERIncorrectGlobalLocalVar  uint16 = 1238
	ERHandshakeError           uint16 = 1043
	ERAccessDenied             uint16 = 1045
	ERNoDB                     uint16 = 1046
	ERUnknownComError          uint16 = 1047
	ERBadDB                    uint16 = 1049
	ERNetPacketTooLarge        uint16 = 1153
	ERNetReadError             uint16 = 1158
	ERNetPacketsOutOfOrder     uint16 = 1156
	ERUnknownError             uint16 = 1105
	EROptionPreventsStatement  uint16 = 1290
	ERUnknownStmtHandler       uint16 = 1243
	ERNotSupportedAuthMode     uint16 = 1251
	ERWrongArguments           uint16 = 1210
	ERSecureTransportRequired  uint16 = 3159
	ERClientInteractionTimeout uint16 = 4031
	ERLostConnectionToBackend  uint16 = 2013
	ERBorrowTimeout            uint16 = 9501
	ERNoTargetAvailable        uint16 = 9502
	ERWriterConflict           uint16 = 9503
	ERLocalInfileDisabled      uint16 = 4166
)

// Field types that matter to the proxy.
const (
	TypeNull byte = 0x06
)
