//! The on-premises directory: reads partner accounts over LDAP and writes `mail` and passwords.
