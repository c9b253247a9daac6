"""The bundled codecs (model files and their cards), installed as package data of aecompress."""
